"""Every architecture against its transformers reference, driven like the engine drives it."""
from __future__ import annotations

import pytest
import torch
from model_harness import PagedKV, assert_logits_close, hf_logits, random_tokens
from tiny_models import reference_model

from lmdeploy_sdk.models import CausalLM, build_model


@pytest.fixture
def models(tiny_model_any) -> tuple[CausalLM, torch.nn.Module]:
    return build_model(tiny_model_any, torch.float32, "cpu"), reference_model(tiny_model_any)


def test_prefill_in_one_go(models):
    ours, ref = models
    prompt = random_tokens(20, ours.config.vocab_size, seed=1)
    (logits,) = PagedKV(ours).step(ours, [(0, prompt)])
    assert logits.shape == (20, ours.config.vocab_size) and logits.dtype == torch.float32
    assert_logits_close(logits, hf_logits(ref, prompt))


def test_chunked_prefill_then_decode(models):
    ours, ref = models
    tokens = random_tokens(25, ours.config.vocab_size, seed=2)
    kv = PagedKV(ours)
    got = []
    for start, end in [(0, 7), (7, 13), (13, 20)]:  # later chunks attend to the cached prefix
        got += kv.step(ours, [(0, tokens[start:end])])
    for pos in range(20, 25):  # decode one token at a time
        got += kv.step(ours, [(0, [tokens[pos]])])
    assert_logits_close(torch.cat(got), hf_logits(ref, tokens))


def test_ragged_batch_then_mixed_step(models):
    ours, ref = models
    vocab = ours.config.vocab_size
    seqs = [random_tokens(n, vocab, seed=10 + n) for n in (6, 17, 10)]
    kv = PagedKV(ours)
    # three prompts of different lengths in one flat forward
    first = kv.step(ours, [(0, seqs[0][:5]), (1, seqs[1][:13]), (2, seqs[2][:9])])
    # decodes of seqs 0 and 2 mixed with a 4-token prefill chunk of seq 1
    second = kv.step(ours, [(0, seqs[0][5:]), (1, seqs[1][13:]), (2, seqs[2][9:])])
    for seq, a, b in zip(seqs, first, second):
        assert_logits_close(torch.cat([a, b]), hf_logits(ref, seq))
