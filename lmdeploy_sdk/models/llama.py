"""LlamaForCausalLM: the reference decoder (rope scaling of every HF type, tied embeddings, optional biases)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import transformers

from lmdeploy_sdk.models.config import ModelConfig, model_config_from_hf
from lmdeploy_sdk.models.decoder import hf_checkpoint_layout
from lmdeploy_sdk.models.spec import ArchSpec


def parse_config(raw: dict[str, Any], model_dir: Path) -> ModelConfig:
    hf = transformers.LlamaConfig.from_dict(raw)
    return model_config_from_hf(
        hf,
        "LlamaForCausalLM",
        model_dir,
        attention_bias=hf.attention_bias,
        attention_out_bias=hf.attention_bias,
        mlp_bias=hf.mlp_bias,
    )


SPEC = ArchSpec(parse_config, hf_checkpoint_layout)
