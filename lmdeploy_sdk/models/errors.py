"""Why a model directory could not be turned into a model (ConfigError lives in
lmdeploy_sdk.errors, so that packages below the models, such as quant, can raise it)."""
from __future__ import annotations

from collections.abc import Iterable

from lmdeploy_sdk.errors import ConfigError, ModelLoadError


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


class CheckpointError(ModelLoadError):
    """The safetensors files do not match what the config describes."""
