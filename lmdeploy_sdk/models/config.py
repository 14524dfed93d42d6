"""ModelConfig: the facts about a checkpoint that the engine and the model layer need.

Per-architecture parsers (llama.py, qwen2.py, ...) read config.json through the
matching transformers config class, so defaults and the old/new rope formats
(`rope_scaling` + `rope_theta` vs `rope_parameters`) are resolved exactly as
transformers resolves them, then call `model_config_from_hf`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig

from lmdeploy_sdk.models.errors import ConfigError

# Rope types whose frequencies can be precomputed once for every position, exactly as transformers does.
# ("dynamic" is exact up to max_position_embeddings, where transformers' dynamic update starts.)
SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    eos_token_ids: list[int]
    bos_token_id: int | None
    torch_dtype: torch.dtype | None  # the checkpoint's dtype, None when config.json does not say
    tie_word_embeddings: bool
    rope_theta: float
    # transformers' rope dict (rope_type, factor, ...) without rope_theta; None for plain rope.
    rope_parameters: dict[str, Any] | None = None
    attention_bias: bool = False  # bias on q, k, v projections
    attention_out_bias: bool = False  # bias on the output projection
    mlp_bias: bool = False
    qk_norm: bool = False  # RMSNorm over each q and k head before rope (Qwen3)
    sliding_window: int | None = None  # declared by the checkpoint; attention here is always full
    # A vision-language model's text model (e.g. LlamaForCausalLM inside LlavaForConditionalGeneration).
    text_architecture: str | None = None

    @property
    def has_vision(self) -> bool:
        return self.text_architecture is not None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "intermediate_size", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.rms_norm_eps <= 0:
            raise ValueError(f"rms_norm_eps must be > 0, got {self.rms_norm_eps!r}")

    @property
    def rope_type(self) -> str:
        return (self.rope_parameters or {}).get("rope_type", "default")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, with errors that name the file."""
    if not path.is_file():
        raise ConfigError(f"{path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot parse {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _token_ids(value: Any, source: str) -> list[int]:
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"eos_token_id in {source} must be an int or a list of ints, got {value!r}")
    return list(values)


def eos_token_ids(hf_eos: Any, model_dir: Path) -> list[int]:
    """config.json's eos ids, then generation_config.json's (chat models list their end-of-turn ids there)."""
    ids = _token_ids(hf_eos, str(model_dir / "config.json"))
    gen_path = model_dir / "generation_config.json"
    if gen_path.is_file():
        gen = read_json(gen_path)
        for i in _token_ids(gen.get("eos_token_id"), str(gen_path)):
            if i not in ids:
                ids.append(i)
    return ids


def _rope(hf: PretrainedConfig) -> tuple[float, dict[str, Any] | None]:
    # transformers (>= 5) has already merged a legacy top-level rope_theta / rope_scaling in here.
    params = dict(hf.rope_parameters or {})
    theta = float(params.pop("rope_theta", 10000.0))
    legacy_type = params.pop("type", None)  # old spelling of rope_type
    rope_type = params.setdefault("rope_type", legacy_type or "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(f"rope_type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError(f"partial_rotary_factor={params['partial_rotary_factor']!r} is not supported (only 1.0)")
    params.pop("partial_rotary_factor", None)
    return theta, (None if rope_type == "default" else params)


def model_config_from_hf(
    hf: PretrainedConfig,
    architecture: str,
    model_dir: Path,
    *,
    attention_bias: bool = False,
    attention_out_bias: bool = False,
    mlp_bias: bool = False,
    qk_norm: bool = False,
    sliding_window: int | None = None,
) -> ModelConfig:
    """The ModelConfig of a transformers config; architecture specifics come as keywords."""
    if getattr(hf, "hidden_act", "silu") != "silu":
        raise ConfigError(f"hidden_act={hf.hidden_act!r} is not supported (only 'silu')")
    num_heads = hf.num_attention_heads
    dtype = getattr(hf, "dtype", None)
    rope_theta, rope_parameters = _rope(hf)
    eos = eos_token_ids(hf.eos_token_id, model_dir)
    try:
        return ModelConfig(
            architecture=architecture,
            model_type=hf.model_type,
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            num_layers=hf.num_hidden_layers,
            num_heads=num_heads,
            num_kv_heads=getattr(hf, "num_key_value_heads", None) or num_heads,
            head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // num_heads,
            intermediate_size=hf.intermediate_size,
            max_position_embeddings=hf.max_position_embeddings,
            rms_norm_eps=float(hf.rms_norm_eps),
            eos_token_ids=eos,
            bos_token_id=hf.bos_token_id,
            torch_dtype=dtype if isinstance(dtype, torch.dtype) else None,
            tie_word_embeddings=bool(hf.tie_word_embeddings),
            rope_theta=rope_theta,
            rope_parameters=rope_parameters,
            attention_bias=attention_bias,
            attention_out_bias=attention_out_bias,
            mlp_bias=mlp_bias,
            qk_norm=qk_norm,
            sliding_window=sliding_window,
        )
    except ValueError as e:
        raise ConfigError(f"{model_dir / 'config.json'}: {e}") from e
