"""InternLM2ForCausalLM: the Llama decoder under other tensor names, with q/k/v packed per kv group.

InternLM2 is remote code in transformers, so its config.json is read here (with
the defaults of its own InternLM2Config) instead of through trust_remote_code.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

import torch
import transformers

from lmdeploy_sdk.models.checkpoint import CheckpointLayout, WeightTarget
from lmdeploy_sdk.models.config import ModelConfig, model_config_from_hf
from lmdeploy_sdk.models.spec import ArchSpec

# InternLM2Config's defaults for the keys we read (num_key_value_heads defaults to num_attention_heads).
_DEFAULTS: dict[str, Any] = dict(
    vocab_size=103168,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    hidden_act="silu",
    max_position_embeddings=2048,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
    bias=True,
    rope_theta=10000.0,
    rope_scaling=None,
)
_OPTIONAL_KEYS = ("num_key_value_heads", "torch_dtype", "dtype")


def parse_config(raw: dict[str, Any], model_dir: Path) -> ModelConfig:
    fields = {**_DEFAULTS, **{k: raw[k] for k in (*_DEFAULTS, *_OPTIONAL_KEYS) if k in raw}}
    bias = bool(fields.pop("bias"))  # on wqkv and wo; the feed-forward has none
    rope = {**(fields.pop("rope_scaling") or {}), "rope_theta": fields.pop("rope_theta")}
    hf = transformers.LlamaConfig(**fields, rope_parameters=rope)
    cfg = model_config_from_hf(
        hf, "InternLM2ForCausalLM", model_dir, attention_bias=bias, attention_out_bias=bias
    )
    return dataclasses.replace(cfg, model_type="internlm2")


def unpack_wqkv(packed: torch.Tensor, num_kv_heads: int, head_dim: int) -> torch.Tensor:
    """InternLM2's wqkv (weight or bias) -> our [q | k | v] row order."""
    # packed: [Hkv * (groups + 2) * D, *tail], per kv head: its `groups` q heads, then k, then v
    tail = packed.shape[1:]
    per_group = packed.view(num_kv_heads, -1, head_dim, *tail)  # [Hkv, groups + 2, D, *tail]
    q = per_group[:, :-2].reshape(-1, *tail)  # [Hq * D, *tail], q head h = kv head h // groups
    k = per_group[:, -2].reshape(-1, *tail)  # [Hkv * D, *tail]
    v = per_group[:, -1].reshape(-1, *tail)
    return torch.cat((q, k, v), dim=0)


def checkpoint_layout(cfg: ModelConfig) -> CheckpointLayout:
    i = cfg.intermediate_size
    unpack = partial(unpack_wqkv, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim)
    targets = {
        "model.tok_embeddings.weight": WeightTarget("model.embed_tokens.weight"),
        "model.norm.weight": WeightTarget("model.norm.weight"),
    }
    if not cfg.tie_word_embeddings:
        targets["output.weight"] = WeightTarget("lm_head.weight")
    for n in range(cfg.num_layers):
        p = f"model.layers.{n}."  # same prefix on both sides
        kinds = ("weight", "bias") if cfg.attention_bias else ("weight",)
        for kind in kinds:
            targets[f"{p}attention.wqkv.{kind}"] = WeightTarget(f"{p}self_attn.qkv_proj.{kind}", transform=unpack)
            targets[f"{p}attention.wo.{kind}"] = WeightTarget(f"{p}self_attn.o_proj.{kind}")
        targets[f"{p}feed_forward.w1.weight"] = WeightTarget(f"{p}mlp.gate_up_proj.weight", (0, i))
        targets[f"{p}feed_forward.w3.weight"] = WeightTarget(f"{p}mlp.gate_up_proj.weight", (i, 2 * i))
        targets[f"{p}feed_forward.w2.weight"] = WeightTarget(f"{p}mlp.down_proj.weight")
        targets[f"{p}attention_norm.weight"] = WeightTarget(f"{p}input_layernorm.weight")
        targets[f"{p}ffn_norm.weight"] = WeightTarget(f"{p}post_attention_layernorm.weight")
    ignored = frozenset({"output.weight"}) if cfg.tie_word_embeddings else frozenset()
    return CheckpointLayout(targets, ignored)


SPEC = ArchSpec(parse_config, checkpoint_layout)
