from __future__ import annotations

import pytest

from lmdeploy_sdk import TurbomindEngineConfig, pipeline


@pytest.fixture
def make_pipeline():
    """make(path, **engine_config) -> Pipeline; at teardown, checks the KV blocks all came back."""
    made = []

    def make(path, log_level="WARNING", **cfg):
        cfg.setdefault("device", "cpu")
        cfg.setdefault("cache_max_entry_count", 256)
        cfg.setdefault("cache_block_seq_len", 4)
        pipe = pipeline(str(path), backend_config=TurbomindEngineConfig(**cfg), log_level=log_level)
        made.append(pipe)
        return pipe

    yield make
    for pipe in made:
        engine = pipe._engine
        engine.call(lambda e: e.check_invariants()).result()
        for sid in list(engine.sessions):
            engine.end_session(sid)
        stats = engine.call(lambda e: e.stats()).result()
        assert stats.running == 0 and stats.waiting == 0, stats
        assert stats.blocks_free == stats.blocks_total, f"leaked KV blocks: {stats}"
        pipe.close()
