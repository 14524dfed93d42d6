"""build_model: placement and dtype, and parity for config variants (tied embeddings, rope scaling, biases)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from model_harness import PagedKV, assert_logits_close, hf_logits, random_tokens
from safetensors import safe_open
from tiny_models import make_tiny_model, reference_model

from lmdeploy_sdk.models import CausalLM, build_model

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}


def _assert_matches_reference(model_dir: Path, n: int = 20) -> CausalLM:
    ours, ref = build_model(model_dir, torch.float32, "cpu"), reference_model(model_dir)
    tokens = random_tokens(n, ours.config.vocab_size, seed=3)
    kv = PagedKV(ours)
    got = kv.step(ours, [(0, tokens[: n - 8])]) + kv.step(ours, [(0, tokens[n - 8 :])])
    assert_logits_close(torch.cat(got), hf_logits(ref, tokens))
    return ours


def _with_random_biases(src: Path, out: Path) -> Path:
    """Re-save `src` with every bias random (transformers initialises biases to zero, which proves nothing)."""
    model = reference_model(src)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        biases = [p for name, p in model.named_parameters() if name.endswith(".bias")]
        assert biases
        for p in biases:
            p.copy_(torch.randn(p.shape, generator=gen))
    model.save_pretrained(out)
    return out


def test_parameters_are_materialised_once_on_the_device(tiny_llama):
    model = build_model(tiny_llama, torch.float32, torch.device("cpu"))
    tensors = list(model.parameters()) + list(model.buffers())
    assert all(t.device.type == "cpu" for t in tensors)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    assert model.model.layers[0].self_attn.qkv_proj.weight.shape == (64 + 2 * 32, 64)  # packed q|k|v
    assert model.model.layers[0].mlp.gate_up_proj.weight.shape == (2 * 128, 64)  # packed gate|up


def test_bfloat16_load(tiny_llama):
    ours16 = build_model(tiny_llama, torch.bfloat16, "cpu")
    assert {p.dtype for p in ours16.parameters()} == {torch.bfloat16}
    assert ours16.model.rope_cos_sin.dtype == torch.float32
    with safe_open(tiny_llama / "model.safetensors", framework="pt") as f:
        stored = f.get_tensor("model.layers.0.mlp.down_proj.weight")
    assert torch.equal(ours16.model.layers[0].mlp.down_proj.weight, stored.to(torch.bfloat16))
    tokens = random_tokens(12, ours16.config.vocab_size, seed=4)
    (logits16,) = PagedKV(ours16).step(ours16, [(0, tokens)])
    assert logits16.dtype == torch.float32
    ref = hf_logits(reference_model(tiny_llama), tokens)
    assert (logits16 - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("dtype", [torch.int8, "float32"])
def test_bad_dtype(tiny_llama, dtype):
    with pytest.raises(ValueError, match="dtype"):
        build_model(tiny_llama, dtype, "cpu")


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen2ForCausalLM"])
def test_tied_embeddings(tiny_model_factory, arch):
    path = tiny_model_factory(arch, tie_word_embeddings=True)
    with safe_open(path / "model.safetensors", framework="pt") as f:
        assert "lm_head.weight" not in f.keys()
    ours = _assert_matches_reference(path)
    assert ours.lm_head is None


def test_llama3_rope_scaling(tmp_path, tokenizer_dir):
    # (not via tiny_model_factory: its cache key cannot hold a dict override)
    path = make_tiny_model("LlamaForCausalLM", tmp_path, tokenizer_dir, rope_scaling=LLAMA3_ROPE)
    ours = _assert_matches_reference(path, n=80)
    assert ours.config.rope_type == "llama3"


def test_qwen2_qkv_bias(tiny_model_factory, tmp_path):
    _assert_matches_reference(_with_random_biases(tiny_model_factory("Qwen2ForCausalLM"), tmp_path))


def test_llama_attention_and_mlp_bias(tiny_model_factory, tmp_path):
    src = tiny_model_factory("LlamaForCausalLM", attention_bias=True, mlp_bias=True)
    ours = _assert_matches_reference(_with_random_biases(src, tmp_path))
    assert ours.model.layers[0].mlp.gate_up_proj.bias is not None


def test_sliding_window_is_declared_and_warned(tiny_model_factory, tmp_path, caplog):
    src = tiny_model_factory("MistralForCausalLM")
    for f in ("config.json", "model.safetensors"):
        shutil.copy(src / f, tmp_path / f)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "sliding_window": 8}))
    with caplog.at_level(logging.WARNING, logger="lmdeploy_sdk.models"):
        model = build_model(tmp_path, torch.float32, "cpu")
    assert model.config.sliding_window == 8
    assert "sliding_window=8" in caplog.text
