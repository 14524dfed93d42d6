"""The bench's measurements that need a GPU: projection times for projection_bound."""
from __future__ import annotations

import pytest

from lmdeploy_sdk.bench import runs
from lmdeploy_sdk.bench.workload import sharegpt_like, write_shape
from lmdeploy_sdk.engine import graph_sizes
from lmdeploy_sdk.engine.factory import load
from lmdeploy_sdk.messages import TurbomindEngineConfig

pytestmark = pytest.mark.gpu


def test_projection_times_cover_every_step_of_the_bound(tokenizer_dir, tmp_path):
    model_dir = write_shape("llama-tiny", tokenizer_dir, tmp_path / "m")
    loaded = load(model_dir, TurbomindEngineConfig(device="cuda", cache_max_entry_count=0.05, max_batch_size=200),
                  random_weights=True)
    try:
        layers, head = runs.measure_projections(loaded, 150, 512)
        expected = [*graph_sizes.FIXED_SIZES, *range(128, 161, 16)]
        assert sorted(head) == expected and sorted(layers) == expected + [512]
        assert all(0 < s < 1 for s in (*layers.values(), *head.values()))
        reqs = sharegpt_like(150, loaded.engine.vocab_size)
        bound = runs.projection_bound(loaded, reqs, 1e12, layers, head, 512)
        assert 0 < bound < float("inf")
    finally:
        loaded.close()
