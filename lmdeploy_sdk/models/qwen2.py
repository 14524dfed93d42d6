"""Qwen2ForCausalLM: Llama with a bias on the q, k and v projections."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import transformers

from lmdeploy_sdk.models.config import ModelConfig, model_config_from_hf
from lmdeploy_sdk.models.decoder import hf_checkpoint_layout
from lmdeploy_sdk.models.spec import ArchSpec


def sliding_window(hf: transformers.PretrainedConfig) -> int | None:
    """The window, when any layer of a Qwen-style config uses sliding attention."""
    layer_types = getattr(hf, "layer_types", None) or []
    return hf.sliding_window if "sliding_attention" in layer_types else None


def parse_config(raw: dict[str, Any], model_dir: Path) -> ModelConfig:
    hf = transformers.Qwen2Config.from_dict(raw)
    return model_config_from_hf(
        hf, "Qwen2ForCausalLM", model_dir, attention_bias=True, sliding_window=sliding_window(hf)
    )


SPEC = ArchSpec(parse_config, hf_checkpoint_layout)
