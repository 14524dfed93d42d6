"""`lmdeploy-sdk bench` on a tiny random-weight shape: runs, prints, writes JSON with its context."""
from __future__ import annotations

import json

from lmdeploy_sdk.bench.workload import sharegpt_like
from lmdeploy_sdk.cli.main import main


def test_workload_is_seeded_and_bounded():
    a = sharegpt_like(50, 1000 + 500, seed=3)
    assert a == sharegpt_like(50, 1500, seed=3) and a != sharegpt_like(50, 1500, seed=4)
    assert all(4 <= len(r.prompt_ids) <= 1024 and 4 <= r.output_len <= 1024 for r in a)


def test_latency_and_throughput_json(tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "lat.json"
    assert main(["bench", "latency", str(tokenizer_dir), "--shape", "llama-tiny", "--input-len", "8",
                 "--output-len", "8", "--device", "cpu", "--cache-max-entry-count", "64",
                 "--json", str(out)]) == 0
    lat = json.loads(out.read_text())
    assert lat["latency"]["tokens"] == 8 and lat["latency"]["decode_tok_s"] > 0
    assert lat["context"]["command"].startswith("lmdeploy-sdk bench latency")
    assert {"gpu", "date", "git_commit"} <= set(lat["context"])
    out = tmp_path / "thr.json"
    assert main(["bench", "throughput", str(tokenizer_dir), "--shape", "llama-tiny", "--num-prompts", "3",
                 "--hf-requests", "2", "--device", "cpu", "--cache-max-entry-count", "1000",
                 "--json", str(out)]) == 0
    thr = json.loads(out.read_text())["throughput"]
    assert thr["requests"] == 3 and thr["output_tokens"] > 0
    assert thr["preemptions"] == 0 and thr["kv_cache_blocks"] == 1000
    assert thr["ratio_vs_transformers"] > 0
    assert "output_tok_s" in capsys.readouterr().out
