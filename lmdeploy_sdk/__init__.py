"""lmdeploy-sdk: run and serve LLMs fast, with LMDeploy's Python API.

Names are imported on first use, so `import lmdeploy_sdk` (and the CLI's
--version) stay fast and the pure-Python parts load without torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lmdeploy_sdk.version import __version__

_EXPORTS = {
    "pipeline": "lmdeploy_sdk.sync_pipeline",
    "Pipeline": "lmdeploy_sdk.sync_pipeline",
    "GenerationConfig": "lmdeploy_sdk.messages",
    "TurbomindEngineConfig": "lmdeploy_sdk.messages",
    "PytorchEngineConfig": "lmdeploy_sdk.messages",
    "ChatTemplateConfig": "lmdeploy_sdk.messages",
    "Response": "lmdeploy_sdk.messages",
    "Session": "lmdeploy_sdk.session",
    "AsyncEngine": "lmdeploy_sdk.async_engine",
    "VisionConfig": "lmdeploy_sdk.vl.config",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from lmdeploy_sdk.async_engine import AsyncEngine
    from lmdeploy_sdk.messages import (
        ChatTemplateConfig,
        GenerationConfig,
        PytorchEngineConfig,
        Response,
        TurbomindEngineConfig,
    )
    from lmdeploy_sdk.sync_pipeline import Pipeline, pipeline
    from lmdeploy_sdk.session import Session
    from lmdeploy_sdk.vl.config import VisionConfig


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lmdeploy_sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
