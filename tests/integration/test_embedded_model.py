"""Acceptance for the embedded SmolLM2-135M-Instruct: conversion fidelity, greedy parity with
transformers on the converted model, a factual answer, and the quickstart example."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import hf_greedy
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmdeploy_sdk import GenerationConfig
from lmdeploy_sdk.convert import MARKER_NAME, is_complete
from lmdeploy_sdk.model_source import (
    CACHE_ENV_VAR,
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    resolve_model_path,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NEW_TOKENS = 64
CHATS = [
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "请用中文简单介绍一下长城。",
    "Write a Python function that checks whether a number is prime.",
    "Complete this code:\n```python\ndef fibonacci(n):\n```",
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    """The embedded model, converted once by `lmdeploy-sdk convert NAME` (the console script) into the
    entry of a private cache; the cache stays selected (env var) for this module, so the name resolves to it."""
    target = tmp_path_factory.mktemp("lmdeploy_sdk_cache") / "models" / DEFAULT_MODEL
    exe = shutil.which("lmdeploy-sdk") or pytest.fail("the console script lmdeploy-sdk is not installed")
    proc = subprocess.run([exe, "convert", DEFAULT_MODEL, "--dst-path", str(target)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "4/4" in proc.stderr, "the progress bar reaches its end"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV_VAR, str(target.parents[1]))
        yield target


def test_cli_output_is_reused_as_the_cache_entry(smollm2):
    marker = smollm2 / MARKER_NAME
    before = marker.stat().st_mtime_ns
    assert is_complete(smollm2, EMBEDDED_MODELS[DEFAULT_MODEL].gguf_path(), "float32")
    assert resolve_model_path(DEFAULT_MODEL) == smollm2
    assert marker.stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def hf_model(smollm2):
    return AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()


def test_converted_weights_equal_the_dequantized_gguf(smollm2):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(EMBEDDED_MODELS[DEFAULT_MODEL].gguf_path())
    by_name = {t.name: t for t in reader.tensors}
    # Names whose layout GGUF keeps as is (q/k projections are permuted for llama.cpp's RoPE).
    pairs = {"token_embd.weight": "model.embed_tokens.weight",
             "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
             "blk.29.attn_v.weight": "model.layers.29.self_attn.v_proj.weight"}
    with safe_open(str(smollm2 / "model.safetensors"), framework="pt") as f:
        assert "lm_head.weight" not in f.keys()  # noqa: SIM118 (not a dict); tied to the embeddings
        for gguf_name, hf_name in pairs.items():
            t = by_name[gguf_name]
            expected = torch.from_numpy(np.ascontiguousarray(dequantize(t.data, t.tensor_type))).float()
            assert torch.equal(f.get_tensor(hf_name), expected), hf_name


def test_greedy_tokens_equal_transformers(smollm2, hf_model, make_pipeline):
    tok = AutoTokenizer.from_pretrained(smollm2)
    conversations = [[{"role": "user", "content": c}] for c in CHATS]
    pipe = make_pipeline(DEFAULT_MODEL, dtype="float32", cache_block_seq_len=16, cache_max_entry_count=128)
    outs = pipe(conversations, GenerationConfig(max_new_tokens=NEW_TOKENS, ignore_eos=True))
    for conv, out in zip(conversations, outs):
        prompt_ids = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert pipe.tokenizer.encode_prompt(conv) == list(prompt_ids)
        assert out.input_token_len == len(prompt_ids)
        assert out.token_ids == hf_greedy(hf_model, list(prompt_ids), NEW_TOKENS), conv[0]["content"]


def test_capital_of_france_is_paris(smollm2, make_pipeline):
    pipe = make_pipeline(DEFAULT_MODEL, cache_block_seq_len=16, cache_max_entry_count=16)
    out = pipe([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=64)
    assert out.finish_reason == "stop" and "Paris" in out.text, out.text


def test_quickstart_example_runs(smollm2):
    """examples/quickstart.py on the already converted model (the cache dir comes from the env var)."""
    script = REPO / "examples" / "quickstart.py"
    proc = subprocess.run([sys.executable, str(script), "--max-new-tokens", "48"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert "tokens/s" in proc.stdout
