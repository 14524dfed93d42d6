"""Model implementations the engine runs, and loading them from HF checkpoint directories."""
from lmdeploy_sdk.models.build import build_model
from lmdeploy_sdk.models.config import ModelConfig
from lmdeploy_sdk.models.decoder import CausalLM
from lmdeploy_sdk.models.errors import CheckpointError, ConfigError, UnsupportedArchitectureError
from lmdeploy_sdk.models.registry import SUPPORTED_ARCHITECTURES, load_model_config

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "CausalLM",
    "CheckpointError",
    "ConfigError",
    "ModelConfig",
    "UnsupportedArchitectureError",
    "build_model",
    "load_model_config",
]
