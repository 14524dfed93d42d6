"""Why a model directory could not be turned into a model."""
from __future__ import annotations

from collections.abc import Iterable

from lmdeploy_sdk.errors import ModelLoadError


class UnsupportedArchitectureError(ValueError):
    """config.json names an architecture we have no implementation for."""

    def __init__(self, architecture: str, supported: Iterable[str], source: str = "") -> None:
        self.architecture = architecture
        self.supported = tuple(supported)
        where = f" (in {source})" if source else ""
        super().__init__(
            f"unsupported model architecture {architecture!r}{where}; "
            f"supported architectures: {', '.join(self.supported)}"
        )


class ConfigError(ModelLoadError, ValueError):
    """config.json is missing, unreadable, or describes a model we cannot run."""


class CheckpointError(ModelLoadError):
    """The safetensors files do not match what the config describes."""
