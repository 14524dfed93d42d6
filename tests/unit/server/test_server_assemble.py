"""Engine deltas -> OpenAI choices, logprobs and usage (real SmolLM2 tokenizer for token texts)."""
from __future__ import annotations

import math

import pytest

from lmdeploy_sdk.messages import Response
from lmdeploy_sdk.server.assemble import (
    ChoiceAccumulator,
    chat_logprobs,
    completion_logprobs,
    first_choices,
    plan_usage,
)
from lmdeploy_sdk.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir) -> Tokenizer:
    return Tokenizer(tokenizer_dir)


def test_accumulator_joins_deltas():
    acc = ChoiceAccumulator()
    acc.add(Response(text="Hel", token_ids=[1], logprobs=[{1: -0.1}], generate_token_len=1, cached_tokens=4))
    acc.add(Response(text="lo", token_ids=[2], logprobs=[{2: -0.2}], generate_token_len=2, cached_tokens=4,
                     finish_reason="length"))
    assert (acc.text, acc.token_ids, acc.generated, acc.cached_tokens, acc.finish_reason) == \
        ("Hello", [1, 2], 2, 4, "length")
    assert acc.logprobs == [{1: -0.1}, {2: -0.2}]


def test_chat_logprobs_sorts_top_and_keeps_the_chosen_token(tokenizer):
    ids = tokenizer.encode("Hello world", add_special_tokens=False)
    other = tokenizer.encode(" there", add_special_tokens=False)[0]
    entries = [{ids[0]: -0.5, other: -0.1, 7: -3.0}, {ids[1]: -0.2}]
    lp = chat_logprobs(tokenizer, ids, entries, top_k=2)
    first, second = lp.content
    assert first.token == tokenizer.decode([ids[0]]) and first.logprob == -0.5
    assert [t.logprob for t in first.top_logprobs] == [-0.1, -0.5]  # best first, k of them
    assert first.bytes == list(first.token.encode())
    assert "".join(t.token for t in lp.content) == "Hello world"
    assert [t.logprob for t in second.top_logprobs] == [-0.2]
    assert chat_logprobs(tokenizer, ids, entries, top_k=0).content[0].top_logprobs == []


def test_completion_logprobs_offsets(tokenizer):
    ids = tokenizer.encode("a bc", add_special_tokens=False)
    entries = [{i: -1.0} for i in ids]
    lp = completion_logprobs(tokenizer, ids, entries, top_k=1, text_offset=10)
    assert lp.tokens == [tokenizer.decode([i]) for i in ids]
    assert lp.text_offset[0] == 10
    assert lp.text_offset[-1] == 10 + sum(len(t) for t in lp.tokens[:-1])
    assert lp.token_logprobs == [-1.0] * len(ids)
    assert all(len(t) == 1 for t in lp.top_logprobs)
    assert completion_logprobs(tokenizer, ids, entries, top_k=0).top_logprobs == [None] * len(ids)
    assert all(not math.isnan(v) for v in lp.token_logprobs)


def test_usage_counts_each_prompt_once():
    accs = [ChoiceAccumulator(generated=3, cached_tokens=5), ChoiceAccumulator(generated=4, cached_tokens=5),
            ChoiceAccumulator(generated=1, cached_tokens=2)]
    prompt_of_choice = [0, 0, 1]
    assert first_choices(prompt_of_choice) == [0, 2]
    usage = plan_usage(30, accs, first_choices(prompt_of_choice))
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (30, 8, 38)
    assert usage.prompt_tokens_details.cached_tokens == 7
