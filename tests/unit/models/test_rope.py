"""The rope table against transformers' rotary embedding for every supported rope type."""
from __future__ import annotations

import pytest
import torch
import transformers
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from lmdeploy_sdk.models import build_model, load_model_config
from lmdeploy_sdk.models.rope import ntk_scaled_base, rope_cos_sin

MAX_POSITIONS = 256
ROPE_SCALINGS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64},
}


def _hf_config(rope_theta: float = 10000.0, rope_scaling: dict | None = None) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        hidden_size=64, num_attention_heads=4, max_position_embeddings=MAX_POSITIONS,
        rope_theta=rope_theta, rope_scaling=rope_scaling, architectures=["LlamaForCausalLM"],
    )


def _hf_table(hf_config: transformers.LlamaConfig, n: int) -> torch.Tensor:
    cos, sin = LlamaRotaryEmbedding(hf_config)(torch.zeros(1), torch.arange(n)[None])  # [1, n, D] each
    half = cos.shape[-1] // 2
    return torch.cat((cos[0, :, :half], sin[0, :, :half]), dim=-1)  # [n, D]


@pytest.mark.parametrize("rope_type", ROPE_SCALINGS)
def test_table_matches_transformers(tmp_path, rope_type):
    hf_config = _hf_config(rope_scaling=ROPE_SCALINGS[rope_type])
    hf_config.save_pretrained(tmp_path)
    cfg = load_model_config(tmp_path)
    assert cfg.rope_type == rope_type
    table = rope_cos_sin(cfg)
    assert table.shape == (MAX_POSITIONS, 16) and table.dtype == torch.float32
    torch.testing.assert_close(table, _hf_table(hf_config, MAX_POSITIONS), atol=1e-6, rtol=1e-6)


def test_yarn_scales_cos_and_sin(tmp_path):
    _hf_config(rope_scaling=ROPE_SCALINGS["yarn"]).save_pretrained(tmp_path)
    table = rope_cos_sin(load_model_config(tmp_path))
    assert table[0, 0].item() == pytest.approx(0.1 * torch.log(torch.tensor(4.0)).item() + 1.0)


def test_rope_scaling_factor_is_ntk_base_scaling(tmp_path):
    _hf_config().save_pretrained(tmp_path)
    cfg = load_model_config(tmp_path)
    table = rope_cos_sin(cfg, rope_scaling_factor=4.0)
    assert table.shape[0] == 4 * MAX_POSITIONS  # the context it is meant to reach
    base = 10000.0 * 4.0 ** (16 / 14)
    assert ntk_scaled_base(10000.0, 16, 4.0) == pytest.approx(base)
    torch.testing.assert_close(table, _hf_table(_hf_config(rope_theta=base), 4 * MAX_POSITIONS), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("factor", [-1.0, float("nan"), float("inf")])
def test_bad_rope_scaling_factor(tiny_llama, factor):
    with pytest.raises(ValueError, match="rope_scaling_factor"):
        build_model(tiny_llama, torch.float32, "cpu", rope_scaling_factor=factor)


def test_model_covers_the_scaled_context(tiny_llama):
    assert build_model(tiny_llama, torch.float32, "cpu").max_positions == 4096
    assert build_model(tiny_llama, torch.float32, "cpu", rope_scaling_factor=2.5).max_positions == 10240
