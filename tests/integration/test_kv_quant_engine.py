"""Acceptance: an int8/int4 KV cache (quant_policy 8/4) works with prefix caching, chunked
prefill, preemption and stateful sessions, on the CPU reference path. Quantization is per
row and deterministic, and attention reads every row from the cache, so each mode must give
exactly the tokens of the plain quantized run."""
from __future__ import annotations

import math

import pytest
from reference import TEXTS

from lmdeploy_sdk import GenerationConfig
from lmdeploy_sdk.quant.kv_cache import QuantizedKVCache

GREEDY = GenerationConfig(max_new_tokens=12, ignore_eos=True)
POLICIES = [8, 4]


def run_batch(pipe, texts):
    return [r.token_ids for r in pipe(texts, gen_config=GREEDY, do_preprocess=False)]


@pytest.fixture(scope="module")
def plain_tokens(tiny_model_factory):
    """{policy: greedy tokens of TEXTS with only quant_policy set}, computed once."""
    from lmdeploy_sdk import TurbomindEngineConfig, pipeline

    out = {}
    for policy in POLICIES:
        cfg = TurbomindEngineConfig(device="cpu", cache_max_entry_count=256, cache_block_seq_len=4,
                                    quant_policy=policy)
        with pipeline(str(tiny_model_factory("LlamaForCausalLM")), backend_config=cfg) as pipe:
            caches = pipe._engine.runner.kv_caches
            assert all(isinstance(c, QuantizedKVCache) and c.bits == policy for pair in caches for c in pair)
            out[policy] = run_batch(pipe, TEXTS)
    return out


@pytest.mark.parametrize(
    "engine_cfg",
    [
        pytest.param(dict(enable_prefix_caching=True), id="prefix-caching"),
        pytest.param(dict(max_prefill_token_num=5), id="chunked-prefill"),
        pytest.param(dict(cache_max_entry_count=24), id="preemption"),
        pytest.param(dict(enable_prefix_caching=True, max_prefill_token_num=7, cache_max_entry_count=30),
                     id="all-at-once"),
    ],
)
@pytest.mark.parametrize("policy", POLICIES)
def test_engine_modes_give_the_plain_quantized_tokens(policy, engine_cfg, tiny_llama, make_pipeline, plain_tokens):
    pipe = make_pipeline(tiny_llama, quant_policy=policy, **engine_cfg)
    assert run_batch(pipe, TEXTS) == plain_tokens[policy]
    again = pipe(TEXTS, gen_config=GREEDY, do_preprocess=False)  # now from the prefix cache, if on
    assert [r.token_ids for r in again] == plain_tokens[policy]
    if engine_cfg.get("enable_prefix_caching") and "cache_max_entry_count" not in engine_cfg:
        assert sum(r.cached_tokens for r in again) > 0
    if engine_cfg.get("cache_max_entry_count", 256) < 64:
        assert pipe._engine.stats().preemptions_total > 0, "the small cache was meant to force preemption"


@pytest.mark.parametrize("policy", POLICIES)
def test_session_turns_reuse_the_quantized_cache(policy, tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama, quant_policy=policy)
    gen = GenerationConfig(max_new_tokens=8, ignore_eos=True)
    session, history = pipe.session(), []
    for i, text in enumerate(["Hi there, who are you?", "Tell me a short story.", "Shorter."]):
        session = pipe.chat(text, session=session, gen_config=gen)
        history.append({"role": "user", "content": text})
        full = pipe(list(history), gen_config=gen)  # a fresh request with the whole history
        assert session.response.token_ids == full.token_ids
        assert (session.response.cached_tokens > 0) == (i > 0)
        history.append({"role": "assistant", "content": session.response.text})
    session.close()


@pytest.mark.parametrize("policy, at_most", [(8, 0.01), (4, 0.05)])
def test_quantized_cache_scores_like_the_unquantized_one(policy, at_most, tiny_llama, make_pipeline):
    ids = make_pipeline(tiny_llama).tokenizer.encode(" ".join(TEXTS))
    plain = math.exp(make_pipeline(tiny_llama).get_ppl(ids)[0])  # get_ppl: mean cross-entropy
    quant = math.exp(make_pipeline(tiny_llama, quant_policy=policy).get_ppl(ids)[0])
    assert abs(quant - plain) / plain <= at_most, (plain, quant)
