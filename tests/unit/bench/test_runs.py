"""The bench's model arithmetic: bytes a decode step reads, and the serial throughput bound."""
from __future__ import annotations

import pytest
import torch

from lmdeploy_sdk.bench import runs
from lmdeploy_sdk.bench.workload import BenchRequest, write_shape
from lmdeploy_sdk.engine.factory import load
from lmdeploy_sdk.messages import TurbomindEngineConfig


@pytest.fixture(scope="module")
def tiny_loaded(tokenizer_dir, tmp_path_factory):
    model_dir = write_shape("llama-tiny", tokenizer_dir, tmp_path_factory.mktemp("tiny") / "m")
    loaded = load(model_dir, TurbomindEngineConfig(device="cpu", cache_max_entry_count=64), random_weights=True)
    yield loaded
    loaded.close()


def test_a_step_reads_every_weight_but_the_embedding_table(tiny_loaded):
    model = tiny_loaded.engine.runner.model
    elem = model.lm_head.weight.element_size()
    embed = model.model.embed_tokens.weight.numel() * elem
    everything = sum(p.numel() for p in model.parameters()) * elem
    assert runs.step_weight_bytes(tiny_loaded) == everything - embed
    cfg = model.config
    kv = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * elem
    assert runs.decode_bytes(tiny_loaded, 10) == everything - embed + 10 * kv


def test_serial_bound_by_hand(tiny_loaded):
    model = tiny_loaded.engine.runner.model
    weights = runs.step_weight_bytes(tiny_loaded)
    kv = runs.kv_bytes_per_token(tiny_loaded)
    head = model.lm_head.weight.numel()
    layers = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    reqs = [BenchRequest(prompt_ids=[1] * 3, output_len=2), BenchRequest(prompt_ids=[1] * 5, output_len=1)]
    bw, flops = 1e9, 1e6
    prefill = 2 * layers * 8 / flops
    step0 = max(weights / bw, 2 * (layers + head) * 2 / flops) + kv * (3 + 5) / bw
    step1 = max(weights / bw, 2 * (layers + head) * 1 / flops) + kv * (3 + 1) / bw
    expected = 3 / (prefill + step0 + step1)
    assert runs.throughput_bound(tiny_loaded, reqs, bw, flops) == pytest.approx(expected)
    # faster memory or compute can only raise the bound
    assert runs.throughput_bound(tiny_loaded, reqs, 2 * bw, flops) > expected
    assert runs.throughput_bound(tiny_loaded, reqs, bw, 2 * flops) > expected


def test_projection_bound_by_hand(tiny_loaded):
    kv = runs.kv_bytes_per_token(tiny_loaded)
    reqs = [BenchRequest(prompt_ids=[1] * 3, output_len=2), BenchRequest(prompt_ids=[1] * 5, output_len=1)]
    # 2 rows cost more than 4 (a badly fitting tile): a 2-row step pads to 4
    layers = {1: 0.5, 2: 0.9, 4: 0.7, 16: 2.0}
    head = {1: 0.1, 2: 0.2, 4: 0.3}
    bw = 1e9
    prefill = 8 * 2.0 / 16
    step0 = 0.7 + 0.2 + kv * (3 + 5) / bw  # 2 rows: the layers at 4, the head at 2
    step1 = 0.5 + 0.1 + kv * (3 + 1) / bw
    expected = 3 / (prefill + step0 + step1)
    assert runs.projection_bound(tiny_loaded, reqs, bw, layers, head, 16) == pytest.approx(expected)


def test_projection_bound_needs_every_size_measured(tiny_loaded):
    reqs = [BenchRequest(prompt_ids=[1] * 3, output_len=1)] * 5
    with pytest.raises(ValueError, match="prefill chunk \\(32 rows\\)"):
        runs.projection_bound(tiny_loaded, reqs, 1e9, {16: 1.0}, {8: 1.0}, 32)
    with pytest.raises(ValueError, match="decode step of 5 rows"):
        runs.projection_bound(tiny_loaded, reqs, 1e9, {16: 1.0}, {4: 1.0}, 16)
