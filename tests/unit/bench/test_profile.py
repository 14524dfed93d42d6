"""`bench profile`'s synthetic step: its blocks come from the block manager and go back."""
from __future__ import annotations

import pytest

from lmdeploy_sdk.bench.profile import profile_step
from lmdeploy_sdk.bench.workload import write_shape
from lmdeploy_sdk.engine.factory import load
from lmdeploy_sdk.messages import TurbomindEngineConfig


@pytest.fixture(scope="module")
def tiny_loaded(tokenizer_dir, tmp_path_factory):
    model_dir = write_shape("llama-tiny", tokenizer_dir, tmp_path_factory.mktemp("tiny") / "m")
    loaded = load(model_dir, TurbomindEngineConfig(device="cpu", cache_max_entry_count=64, enable_prefix_caching=True),
                  random_weights=True)
    yield loaded
    loaded.close()


@pytest.mark.parametrize("new_tokens", [1, 40])
def test_profile_gives_its_blocks_back(tiny_loaded, new_tokens):
    engine = tiny_loaded.engine
    free = engine.bm.num_free_blocks
    r = profile_step(engine, batch=3, context=40, new_tokens=new_tokens, iters=2)
    assert engine.bm.num_free_blocks == free
    assert (r["batch"], r["context"], r["new_tokens"]) == (3, 40, new_tokens)
    assert r["step_ms"] > 0 and r["kernels"]
    assert sum(k["ms"] for k in r["kernels"]) == pytest.approx(r["kernel_ms"])
    assert abs(sum(k["share"] for k in r["kernels"]) - 1) < 1e-9
    assert any("mm" in k["name"] for k in r["kernels"])  # the projections show up


def test_profile_leaves_the_prefix_cache_consistent(tiny_loaded):
    engine = tiny_loaded.engine
    ids = list(range(1000, 1000 + 3 * engine.bm.block_size))
    from lmdeploy_sdk import GenerationConfig
    from lmdeploy_sdk.sync_pipeline import Pipeline

    pipe = Pipeline(loaded=tiny_loaded)
    gen = GenerationConfig(max_new_tokens=4, ignore_eos=True)
    before = pipe(ids, gen_config=gen)
    cached = engine.bm.num_free_blocks - sum(h is None for h in engine.bm.block_hash)
    assert cached > 0  # the prompt's full blocks wait in the prefix cache
    # every free block, the cached ones too, gets overwritten by the profile's K/V
    profile_step(engine, batch=engine.bm.num_free_blocks, context=engine.bm.block_size, iters=1)
    after = pipe(ids, gen_config=gen)  # the prefix was evicted, not reused stale
    assert after.token_ids == before.token_ids
    engine.call(lambda e: e.check_invariants()).result()


@pytest.mark.parametrize(
    "kw, match",
    [(dict(batch=0, context=8), "batch and iters"), (dict(batch=1, context=8, new_tokens=9), "new_tokens"),
     (dict(batch=1, context=10**9), "session_len"), (dict(batch=10**6, context=64), "KV blocks")],
)
def test_profile_rejects_bad_sizes(tiny_loaded, kw, match):
    with pytest.raises(ValueError, match=match):
        profile_step(tiny_loaded.engine, **kw)
