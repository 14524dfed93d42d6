"""What each architecture module provides to the registry."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdeploy_sdk.models.checkpoint import CheckpointLayout
from lmdeploy_sdk.models.config import ModelConfig


@dataclass(frozen=True)
class ArchSpec:
    # (config.json as a dict, model directory) -> ModelConfig
    parse_config: Callable[[dict[str, Any], Path], ModelConfig]
    # ModelConfig -> where each checkpoint tensor goes
    checkpoint_layout: Callable[[ModelConfig], CheckpointLayout]
