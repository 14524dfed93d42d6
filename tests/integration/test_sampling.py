"""Acceptance: seeded sampling reproduces across runs and batch compositions; top_k=1 is greedy."""
from __future__ import annotations

import asyncio

import torch
from tiny_models import reference_model

from lmdeploy_sdk import GenerationConfig

PROMPT = "Sampling test prompt"
SEEDED = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=16,
                          ignore_eos=True, random_seed=1234)


def test_seeded_sampling_is_reproducible_across_runs_and_batches(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    alone = pipe(PROMPT, gen_config=SEEDED).token_ids
    assert pipe(PROMPT, gen_config=SEEDED).token_ids == alone
    others = GenerationConfig(do_sample=True, temperature=1.0, max_new_tokens=20, ignore_eos=True)
    batch = pipe(["other prompt one", PROMPT, "a much longer other prompt " * 5],
                 gen_config=[others, SEEDED, others])
    assert batch[1].token_ids == alone
    # a fresh engine gives the same tokens too
    pipe2 = make_pipeline(tiny_llama, max_prefill_token_num=3)
    assert pipe2(PROMPT, gen_config=SEEDED).token_ids == alone


def test_different_seeds_differ_and_unseeded_varies(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    a = pipe(PROMPT, gen_config=SEEDED).token_ids
    b = pipe(PROMPT, gen_config=SEEDED.replace(random_seed=99)).token_ids
    assert a != b


def test_top_k_1_equals_greedy(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    greedy = pipe(PROMPT, max_new_tokens=16, ignore_eos=True).token_ids
    top1 = pipe(PROMPT, do_sample=True, top_k=1, temperature=1.5, max_new_tokens=16, ignore_eos=True)
    assert top1.token_ids == greedy


def test_n_samples_and_logprobs(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    out = pipe(PROMPT, gen_config=SEEDED.replace(n=3, logprobs=2))
    assert len(out) == 3 and all(r.index == 0 for r in out)
    assert len({tuple(r.token_ids) for r in out}) > 1
    for r in out:
        assert len(r.logprobs) == len(r.token_ids)
        for tok, lp in zip(r.token_ids, r.logprobs):
            assert tok in lp and all(v <= 0 for v in lp.values())
            assert len(lp) <= 3


def test_stop_words_bad_words_stop_ids_min_new_tokens(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    base = pipe(PROMPT, max_new_tokens=12, ignore_eos=True)
    assert base.finish_reason == "length" and len(base.token_ids) == 12
    # stop at a word the greedy text contains, spanning whatever tokens it takes
    word = base.text[3:9]
    cut = pipe(PROMPT, max_new_tokens=12, ignore_eos=True, stop_words=[word])
    assert cut.finish_reason == "stop" and cut.text == base.text[: base.text.index(word)]
    kept = pipe(PROMPT, max_new_tokens=12, ignore_eos=True, stop_words=[word], include_stop_str_in_output=True)
    assert kept.text == base.text[: base.text.index(word) + len(word)]
    # stop token id: ends before that token
    third = base.token_ids[2]
    stopped = pipe(PROMPT, max_new_tokens=12, ignore_eos=True, stop_token_ids=[third])
    assert stopped.finish_reason == "stop" and stopped.token_ids == base.token_ids[:2]
    # min_new_tokens holds the stop token back
    late = pipe(PROMPT, max_new_tokens=12, ignore_eos=True, stop_token_ids=[third], min_new_tokens=5)
    assert third not in late.token_ids[:5]
    # a banned token never appears
    banned = pipe(PROMPT, max_new_tokens=12, ignore_eos=True, bad_token_ids=[base.token_ids[0]])
    assert base.token_ids[0] not in banned.token_ids
    first_word = pipe.tokenizer.decode(base.token_ids[:1])
    assert pipe.tokenizer.encode(first_word, add_special_tokens=False) == base.token_ids[:1]
    words = pipe(PROMPT, max_new_tokens=12, ignore_eos=True, bad_words=[first_word])
    assert base.token_ids[0] not in words.token_ids


def test_repetition_penalty_matches_transformers(tiny_llama, make_pipeline):
    """HF applies the penalty over prompt and generated tokens alike; so do we."""
    pipe = make_pipeline(tiny_llama)
    ids = pipe.tokenizer.encode("la la la la la la la la", add_special_tokens=False)
    gen = GenerationConfig(max_new_tokens=16, ignore_eos=True, repetition_penalty=1.5)

    async def run():
        return [t async for r in pipe.async_engine.generate(ids, gen) for t in r.token_ids]

    tokens = asyncio.run(run())
    model = reference_model(tiny_llama)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=16, do_sample=False, repetition_penalty=1.5,
                             eos_token_id=None, pad_token_id=0)
    assert tokens == out[0, len(ids):].tolist()
