"""Qwen3ForCausalLM: Llama with per-head RMSNorm on q and k and an explicit head_dim."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import transformers

from lmdeploy_sdk.models.config import ModelConfig, model_config_from_hf
from lmdeploy_sdk.models.decoder import hf_checkpoint_layout
from lmdeploy_sdk.models.qwen2 import sliding_window
from lmdeploy_sdk.models.spec import ArchSpec


def parse_config(raw: dict[str, Any], model_dir: Path) -> ModelConfig:
    hf = transformers.Qwen3Config.from_dict(raw)
    return model_config_from_hf(
        hf,
        "Qwen3ForCausalLM",
        model_dir,
        attention_bias=hf.attention_bias,
        attention_out_bias=hf.attention_bias,
        qk_norm=True,
        sliding_window=sliding_window(hf),
    )


SPEC = ArchSpec(parse_config, hf_checkpoint_layout)
