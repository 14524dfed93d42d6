"""The LLaVA families (LlavaForConditionalGeneration, LlavaNextForConditionalGeneration): our
decoder runs their text model (any architecture we run); the vision tower and projector run as
transformers modules in lmdeploy_sdk.vl, whose features replace the image tokens' embeddings."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from lmdeploy_sdk.models.checkpoint import CheckpointLayout
from lmdeploy_sdk.models.config import ModelConfig
from lmdeploy_sdk.models.errors import ConfigError
from lmdeploy_sdk.models.spec import ArchSpec

VL_ARCHITECTURES = ("LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration")
# transformers >= 4.52 saves the text model under model.language_model; older checkpoints (the
# llava-hf hub repos) under language_model.model, with language_model.lm_head.
_RENAMES = (
    ("model.language_model.", "model."),
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
)
_VISION_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.", "model.image_newline",
                    "vision_tower.", "multi_modal_projector.", "image_newline")


def text_config(raw: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """config.json's text_config (absent: a Llama, as transformers' LlavaConfig defaults it)."""
    text = raw.get("text_config", {"model_type": "llama"})
    if not isinstance(text, dict):
        raise ConfigError(f"{model_dir / 'config.json'}: text_config must be an object, got {text!r}")
    return dict(text)


def make_spec(inner: Callable[[dict[str, Any]], ArchSpec]) -> ArchSpec:
    """inner: the text config dict -> the ArchSpec of its architecture (from the registry)."""

    def parse_config(raw: dict[str, Any], model_dir: Path) -> ModelConfig:
        text = text_config(raw, model_dir)
        if "eos_token_id" not in text and "eos_token_id" in raw:
            text["eos_token_id"] = raw["eos_token_id"]
        config = inner(text).parse_config(text, model_dir)
        return dataclasses.replace(config, architecture=raw["architectures"][0], text_architecture=config.architecture)

    def checkpoint_layout(config: ModelConfig) -> CheckpointLayout:
        text = dataclasses.replace(config, architecture=config.text_architecture)
        layout = inner_by_name(config.text_architecture).checkpoint_layout(text)
        return dataclasses.replace(layout, renames=_RENAMES, ignored_prefixes=_VISION_PREFIXES)

    def inner_by_name(name: str) -> ArchSpec:
        return inner({"architectures": [name]})

    return ArchSpec(parse_config, checkpoint_layout)
