"""`lmdeploy-sdk bench` on a tiny random-weight shape: runs, prints, writes JSON with its context."""
from __future__ import annotations

import json

import pytest

from lmdeploy_sdk.bench.workload import LONG_INPUT_RANGE, long_context, request_mix, sharegpt_like
from lmdeploy_sdk.cli.main import main


def test_workload_is_seeded_and_bounded():
    a = sharegpt_like(50, 1000 + 500, seed=3)
    assert a == sharegpt_like(50, 1500, seed=3) and a != sharegpt_like(50, 1500, seed=4)
    assert all(4 <= len(r.prompt_ids) <= 1024 and 4 <= r.output_len <= 1024 for r in a)


def test_long_context_mix_is_seeded_and_long():
    a = request_mix("long", 4, 2000, seed=1)
    assert a == long_context(4, 2000, seed=1) != long_context(4, 2000, seed=2)
    assert all(LONG_INPUT_RANGE[0] <= len(r.prompt_ids) <= LONG_INPUT_RANGE[1] for r in a)
    with pytest.raises(ValueError, match="sharegpt, long"):
        request_mix("short", 4, 2000)


@pytest.mark.parametrize("policy", [8, 4])
def test_bench_reports_the_quantized_kv_cache(policy, tokenizer_dir, tmp_path):
    out = tmp_path / "lat.json"
    assert main(["bench", "latency", str(tokenizer_dir), "--shape", "llama-tiny", "--input-len", "8",
                 "--output-len", "4", "--device", "cpu", "--cache-max-entry-count", "64",
                 "--quant-policy", str(policy), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["kv_cache"] == {"blocks": 64, "block_tokens": 64, "bits": policy}


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


def test_throughput_step_times(tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "thr.json"
    assert main(["bench", "throughput", str(tokenizer_dir), "--shape", "llama-tiny", "--num-prompts", "4",
                 "--device", "cpu", "--cache-max-entry-count", "1000", "--step-times", "--json", str(out)]) == 0
    thr = json.loads(out.read_text())["throughput"]
    steps = thr["step_times"]
    # every prompt token is computed in a step of its own kind; decode rows make the other tokens
    assert steps["with_prompt_tokens"]["prompt_tokens"] == thr["input_tokens"]
    decode_rows = sum(b["steps"] * b["mean_rows"] for b in steps["decode_only"])
    assert 0 < decode_rows <= thr["output_tokens"]
    assert steps["steps"] > 1 and 0 < steps["seconds"] <= thr["elapsed_s"]
    assert all(b["mean_host_wait_ms"] >= 0 and b["mean_context_tokens"] > 0 for b in steps["decode_only"])
    printed = capsys.readouterr().out
    assert "decode rows" in printed and "host wait ms" in printed


def test_step_times_only_for_throughput(tokenizer_dir):
    with pytest.raises(SystemExit, match="--step-times applies to `bench throughput`"):
        main(["bench", "latency", str(tokenizer_dir), "--shape", "llama-tiny", "--device", "cpu", "--step-times"])


def test_profile_json(tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "prof.json"
    assert main(["bench", "profile", str(tokenizer_dir), "--shape", "llama-tiny", "--batch", "3", "--context", "40",
                 "--device", "cpu", "--cache-max-entry-count", "64", "--json", str(out)]) == 0
    prof = json.loads(out.read_text())
    r = prof["profile"]
    assert (r["batch"], r["context"], r["new_tokens"]) == (3, 40, 1)
    assert r["kernels"] and r["kernel_ms"] > 0
    assert prof["context"]["command"].startswith("lmdeploy-sdk bench profile")
    printed = capsys.readouterr().out
    assert "decode step: batch 3, context 40" in printed and "kernel" in printed


def test_prefill_only_for_profile(tokenizer_dir):
    with pytest.raises(SystemExit, match="--prefill applies to `bench profile`"):
        main(["bench", "latency", str(tokenizer_dir), "--shape", "llama-tiny", "--device", "cpu", "--prefill"])


def test_vision_json(tokenizer_dir, tmp_path, capsys):
    """bench vision on the tiny llava shape: a 336 px image is 576 image tokens, the figures add up."""
    out = tmp_path / "vision.json"
    assert main(["bench", "vision", str(tokenizer_dir), "--shape", "llava-tiny", "--num-prompts", "4",
                 "--output-len", "4", "--device", "cpu", "--cache-max-entry-count", "96", "--vision-batch-size", "3",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())["vision"]
    assert r["image_tokens"] == 576 and r["question_tokens"] == 32
    assert r["prompt_tokens"] > r["image_tokens"] + r["question_tokens"]
    assert r["requests"] == 4 and r["output_tok_s"] > 0 and 0 < r["vision_tower_s"] <= r["vision_encode_s"]
    assert 0 < r["vision_share_of_wall"] < 1 and r["vision_max_batch_size"] == 3
    assert "ttft_s" in capsys.readouterr().out
    assert main(["bench", "vision", str(tokenizer_dir), "--shape", "llama-tiny", "--device", "cpu"]) == 2
    assert "--shape llama-tiny: vision shapes are llava-1.5-7b, llava-tiny" in capsys.readouterr().err
