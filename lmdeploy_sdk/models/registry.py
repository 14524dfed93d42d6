"""Which architectures we run, and reading a model directory's config.json into a ModelConfig."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import huggingface_hub.errors

from lmdeploy_sdk.models import internlm2, llama, llava, mistral, qwen2, qwen3
from lmdeploy_sdk.models.config import ModelConfig, read_json
from lmdeploy_sdk.models.errors import ConfigError, UnsupportedArchitectureError
from lmdeploy_sdk.models.spec import ArchSpec


def _text_spec(text_config: dict) -> ArchSpec:
    """The spec of a vision-language model's text model (from its text_config)."""
    return arch_spec(_architecture(text_config, Path("config.json (text_config)")))


_LLAVA = llava.make_spec(_text_spec)
# Keyed by the HF `architectures` name in config.json.
_ARCHITECTURES: Mapping[str, ArchSpec] = MappingProxyType({
    "LlamaForCausalLM": llama.SPEC,
    "Qwen2ForCausalLM": qwen2.SPEC,
    "Qwen3ForCausalLM": qwen3.SPEC,
    "MistralForCausalLM": mistral.SPEC,
    "InternLM2ForCausalLM": internlm2.SPEC,
    **{name: _LLAVA for name in llava.VL_ARCHITECTURES},
})
# For configs saved without `architectures`.
_BY_MODEL_TYPE: Mapping[str, str] = MappingProxyType({
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mistral": "MistralForCausalLM",
    "internlm2": "InternLM2ForCausalLM",
})

SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(_ARCHITECTURES)

# What transformers' config classes raise for invalid values (strict dataclass fields, rope validation).
_HF_CONFIG_ERRORS: tuple[type[Exception], ...] = (
    KeyError, ValueError, TypeError, AttributeError,
    getattr(huggingface_hub.errors, "StrictDataclassError", ValueError),
)


def arch_spec(architecture: str, source: str = "") -> ArchSpec:
    spec = _ARCHITECTURES.get(architecture)
    if spec is None:
        raise UnsupportedArchitectureError(architecture, SUPPORTED_ARCHITECTURES, source)
    return spec


def _architecture(raw: dict, path: Path) -> str:
    archs = raw.get("architectures")
    if archs is None:
        model_type = raw.get("model_type")
        if model_type in _BY_MODEL_TYPE:
            return _BY_MODEL_TYPE[model_type]
        raise ConfigError(
            f"{path} names no 'architectures' (model_type={model_type!r}); "
            f"supported architectures: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        raise ConfigError(f"'architectures' in {path} must be a non-empty list of names, got {archs!r}")
    return archs[0]


def load_model_config(model_dir: str | Path) -> ModelConfig:
    """The ModelConfig of a HF model directory (config.json, plus generation_config.json's eos ids)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ConfigError(f"model directory {model_dir} does not exist or is not a directory")
    path = model_dir / "config.json"
    raw = read_json(path)
    spec = arch_spec(_architecture(raw, path), str(path))
    try:
        return spec.parse_config(dict(raw), model_dir)
    except ConfigError:
        raise
    except _HF_CONFIG_ERRORS as e:
        raise ConfigError(f"invalid model config {path}: {e}") from e
