"""The bench's measurements that need a GPU: projection times for projection_bound."""
from __future__ import annotations

import json

import pytest
import torch

from lmdeploy_sdk.bench import runs
from lmdeploy_sdk.bench.workload import sharegpt_like, write_shape
from lmdeploy_sdk.cli.main import main
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
        expected = [*graph_sizes.FIXED_SIZES, 128, 144, 150]
        assert sorted(head) == expected and sorted(layers) == expected + [512]
        assert all(0 < s < 1 for s in (*layers.values(), *head.values()))
        reqs = sharegpt_like(150, loaded.engine.vocab_size)
        bound = runs.projection_bound(loaded, reqs, 1e12, layers, head, 512)
        assert 0 < bound < float("inf")
    finally:
        loaded.close()


def test_throughput_gives_the_gpu_back_before_the_baseline(tokenizer_dir, tmp_path, monkeypatch):
    """transformers' run comes after ours and needs the memory our KV cache held."""
    seen = {}

    def fake_baseline(model_dir, requests, device, dtype):
        seen["allocated"] = torch.cuda.memory_allocated(device)
        return {"output_tok_s": 1.0}

    monkeypatch.setattr(runs, "hf_generate_throughput", fake_baseline)
    before = torch.cuda.memory_allocated()
    out = tmp_path / "thr.json"
    assert main(["bench", "throughput", str(tokenizer_dir), "--shape", "llama-tiny", "--num-prompts", "3",
                 "--hf-requests", "2", "--cache-max-entry-count", "0.1", "--json", str(out)]) == 0
    assert seen["allocated"] - before < 64 << 20, seen  # the KV cache alone was ~10% of free memory
    r = json.loads(out.read_text())["throughput"]
    assert r["projection_bound_output_tok_s"] > 0 and r["decode_graph_sizes"][-1] >= 3


def test_w4_shape_runs_4bit_and_counts_its_bytes(tokenizer_dir, tmp_path):
    """`bench ... --shape S --w4`: random 4-bit projections; the roofline and the weight
    memory count the packed bytes (about a quarter of bf16's for the projections)."""
    sizes = {}
    for w4 in (False, True):
        out = tmp_path / f"lat{w4}.json"
        args = ["bench", "latency", str(tokenizer_dir), "--shape", "llama-tiny", "--input-len", "16",
                "--output-len", "16", "--cache-max-entry-count", "0.05", "--json", str(out)]
        assert main(args + (["--w4", "--w-group-size", "64"] if w4 else [])) == 0
        r = json.loads(out.read_text())
        assert r["latency"]["decode_tok_s"] > 0 and r["latency"]["roofline_tok_s"] > 0
        sizes[w4] = r["latency"]["roofline_tok_s"]
        assert r["model"] == ("llama-tiny w4 g64" if w4 else "llama-tiny")
    assert sizes[True] > sizes[False]  # fewer bytes a step: a higher roofline
