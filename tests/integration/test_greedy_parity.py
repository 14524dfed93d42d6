"""Acceptance: greedy tokens equal transformers' generate() for every architecture,
alone and batched, with prefix caching, forced chunked prefill and forced preemption."""
from __future__ import annotations

import pytest
from reference import TEXTS, hf_greedy
from tiny_models import ARCHITECTURES, reference_model
from transformers import AutoTokenizer

from lmdeploy_sdk import GenerationConfig

NEW = 12
GREEDY = GenerationConfig(max_new_tokens=NEW, ignore_eos=True)


@pytest.fixture(scope="module")
def expected(tiny_model_factory):
    """{arch: [hf greedy tokens per text]} computed once."""
    cache = {}

    def get(arch):
        if arch not in cache:
            path = tiny_model_factory(arch)
            tok = AutoTokenizer.from_pretrained(path)
            model = reference_model(path)
            cache[arch] = [hf_greedy(model, tok.encode(t), NEW) for t in TEXTS]
        return cache[arch]

    return get


def run_batch(pipe, texts):
    return [r.token_ids for r in pipe(texts, gen_config=GREEDY, do_preprocess=False)]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_single_and_batched_equal_transformers(arch, tiny_model_factory, make_pipeline, expected):
    pipe = make_pipeline(tiny_model_factory(arch))
    want = expected(arch)
    solo = [pipe(t, gen_config=GREEDY, do_preprocess=False).token_ids for t in TEXTS[:3]]
    assert solo == want[:3]
    assert run_batch(pipe, TEXTS) == want


@pytest.mark.parametrize(
    "engine_cfg",
    [
        pytest.param(dict(enable_prefix_caching=True), id="prefix-caching"),
        pytest.param(dict(max_prefill_token_num=5), id="chunked-prefill"),
        pytest.param(dict(cache_max_entry_count=24, cache_block_seq_len=4), id="preemption"),
        pytest.param(dict(enable_prefix_caching=True, max_prefill_token_num=7, cache_max_entry_count=30),
                     id="all-at-once"),
    ],
)
@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen3ForCausalLM"])
def test_engine_modes_equal_transformers(arch, engine_cfg, tiny_model_factory, make_pipeline, expected):
    pipe = make_pipeline(tiny_model_factory(arch), **engine_cfg)
    want = expected(arch)
    assert run_batch(pipe, TEXTS) == want
    # second pass: with prefix caching the prompts now hit the cache
    again = pipe(TEXTS, gen_config=GREEDY, do_preprocess=False)
    assert [r.token_ids for r in again] == want
    stats = pipe._engine.stats()
    if engine_cfg.get("enable_prefix_caching") and "cache_max_entry_count" not in engine_cfg:
        assert sum(r.cached_tokens for r in again) > 0
    if engine_cfg.get("cache_max_entry_count", 256) < 64:
        assert stats.preemptions_total > 0, "the small cache was meant to force preemption"


def test_chunked_prefill_really_splits(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama, max_prefill_token_num=3)
    steps = []
    sched = pipe._engine.scheduler
    original = sched.schedule

    def spy():
        batch = original()
        steps.append([n for _, n in batch.items])
        return batch

    sched.schedule = spy
    pipe(TEXTS[4], gen_config=GREEDY, do_preprocess=False)
    assert max(max(s) for s in steps if s) <= 3
