"""MistralForCausalLM: Llama without biases, plus a declared sliding window."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import transformers

from lmdeploy_sdk.models.config import ModelConfig, model_config_from_hf
from lmdeploy_sdk.models.decoder import hf_checkpoint_layout
from lmdeploy_sdk.models.spec import ArchSpec


def parse_config(raw: dict[str, Any], model_dir: Path) -> ModelConfig:
    hf = transformers.MistralConfig.from_dict(raw)
    return model_config_from_hf(hf, "MistralForCausalLM", model_dir, sliding_window=hf.sliding_window)


SPEC = ArchSpec(parse_config, hf_checkpoint_layout)
