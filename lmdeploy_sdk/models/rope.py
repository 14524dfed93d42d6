"""The rotary-embedding table every layer reads: cos | sin for each position.

Frequencies for scaled rope types (linear, dynamic, yarn, llama3) come from
transformers' own ROPE_INIT_FUNCTIONS, so they match the reference models
bit for bit instead of being re-derived here.
"""
from __future__ import annotations

import math

import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from lmdeploy_sdk.models.config import ModelConfig


def ntk_scaled_base(base: float, head_dim: int, factor: float) -> float:
    """NTK-aware rope base for a context `factor` times the trained one.

    This is what the engine's `rope_scaling_factor` (LMDeploy's dynamic NTK knob)
    means here: the base is raised once to `base * factor ** (D / (D - 2))`, which
    stretches the lowest frequency by `factor` while leaving the highest almost
    unchanged. Applied statically for every position (not re-derived per length).
    """
    return base * factor ** (head_dim / (head_dim - 2))


def table_length(config: ModelConfig, rope_scaling_factor: float) -> int:
    """Positions covered: the trained context, times `rope_scaling_factor` when that extends it."""
    factor = max(rope_scaling_factor, 1.0)
    return math.ceil(config.max_position_embeddings * factor)


def inv_freq(config: ModelConfig, base: float) -> tuple[torch.Tensor, float]:
    """(inverse frequencies [D/2] float32, attention scaling) for the config's rope type and `base`."""
    d = config.head_dim
    if config.rope_type == "default":
        return 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float) / d)), 1.0
    rope_type = config.rope_type
    # A transformers config carrying just what the rope init functions read.
    hf = transformers.LlamaConfig(
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=d,
        max_position_embeddings=config.max_position_embeddings,
        rope_parameters={**config.rope_parameters, "rope_theta": base},
    )
    freqs, attention_scaling = ROPE_INIT_FUNCTIONS[rope_type](hf, device=torch.device("cpu"))
    return freqs.float(), float(attention_scaling)


def rope_cos_sin(
    config: ModelConfig, rope_scaling_factor: float = 0.0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The table `ops.apply_rope` reads: [positions, D] float32, cos in the first half, sin in the second."""
    if not math.isfinite(rope_scaling_factor) or rope_scaling_factor < 0:
        raise ValueError(f"rope_scaling_factor must be a finite number >= 0, got {rope_scaling_factor!r}")
    base = config.rope_theta
    if rope_scaling_factor > 0:
        base = ntk_scaled_base(base, config.head_dim, rope_scaling_factor)
    freqs, attention_scaling = inv_freq(config, base)  # [D/2]
    positions = torch.arange(table_length(config, rope_scaling_factor), dtype=torch.float)
    angles = positions[:, None] * freqs[None, :]  # [P, D/2]
    table = torch.cat((angles.cos(), angles.sin()), dim=-1) * attention_scaling  # [P, D]
    return table.to(device)
