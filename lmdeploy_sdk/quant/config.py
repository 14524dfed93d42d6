"""Which 4-bit format a model directory holds: config.json's `quantization_config`,
checked against what the user asked for (`model_format`).

Supported: AutoAWQ's GEMM layout (`quant_method: awq`, 4 bits, zero points), GPTQ int4
without act-order (`quant_method: gptq`), and our own rows layout (`quant_method:
lmdeploy_int4`, written by `lmdeploy-sdk convert` from GGUF Q4_0/Q4_1 files). Everything
else fails here, before any weight is read, with the reason and what would work.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from lmdeploy_sdk.errors import ConfigError
from lmdeploy_sdk.quant.int4 import SUPPORTED_GROUP_SIZES

# quant_method -> the model_format that names it
METHODS = {"awq": "awq", "gptq": "gptq", "lmdeploy_int4": "awq"}
MODEL_FORMATS = (None, "hf", "awq", "gptq")
QUANTIZE_HINT = "quantize it first with `lmdeploy-sdk lite auto_awq MODEL --work-dir DIR`"


@dataclass(frozen=True)
class QuantConfig:
    """A checkpoint's 4-bit format, as the loader needs it."""

    method: str  # 'awq' | 'gptq' | 'lmdeploy_int4'
    group_size: int
    zero_offset: int = 0  # added to stored GPTQ zero points (1 for the v1 format)
    modules_to_not_convert: tuple[str, ...] = ()

    @property
    def has_zero_points(self) -> bool:
        """AWQ/GPTQ store integer zero points (m = -z s); our rows layout stores m itself."""
        return self.method != "lmdeploy_int4"

    def converts(self, module_name: str) -> bool:
        """Whether the checkpoint's projection `module_name` (e.g. model.layers.0.mlp.up_proj) is 4-bit."""
        return not any(key in module_name for key in self.modules_to_not_convert)


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {message}")


def _awq(qc: dict[str, Any], where: str) -> QuantConfig:
    version = str(qc.get("version", "gemm")).lower()
    _require(version == "gemm", where, f"AWQ version {version!r} is not supported (only AutoAWQ's 'gemm' layout)")
    _require(qc.get("zero_point", True) is True, where,
             "AWQ without zero points (zero_point: false) is not supported; re-quantize with zero_point: true")
    return QuantConfig("awq", int(qc.get("group_size", qc.get("q_group_size", 128))))


def _gptq(qc: dict[str, Any], where: str) -> QuantConfig:
    _require(not qc.get("desc_act", False), where,
             "GPTQ with act-order (desc_act: true) is not supported; re-quantize with desc_act: false")
    fmt = str(qc.get("checkpoint_format", "gptq")).lower()
    _require(fmt in ("gptq", "gptq_v2"), where, f"GPTQ checkpoint_format {fmt!r} is not supported (gptq, gptq_v2)")
    return QuantConfig("gptq", int(qc.get("group_size", 128)), zero_offset=0 if fmt == "gptq_v2" else 1)


def quant_config(raw: dict[str, Any], model_format: str | None, where: str) -> QuantConfig | None:
    """The QuantConfig of config.json `raw` (None for float weights); `model_format` is the
    user's (None: detect). Raises ConfigError for anything we cannot run."""
    if model_format not in MODEL_FORMATS:
        raise ValueError(f"model_format={model_format!r} is invalid: must be None, 'hf', 'awq' or 'gptq'")
    qc = raw.get("quantization_config")
    if qc is None:
        _require(model_format in (None, "hf"), where,
                 f"model_format={model_format!r} but this model has float weights (no quantization_config); "
                 f"{QUANTIZE_HINT}, or leave model_format unset")
        return None
    _require(isinstance(qc, dict), where, f"quantization_config must be an object, got {qc!r}")
    method = str(qc.get("quant_method", "")).lower()
    _require(method in METHODS, where,
             f"quant_method {method!r} is not supported; 4-bit weights load from: awq, gptq "
             f"(or {QUANTIZE_HINT})")
    expected = METHODS[method]
    _require(model_format in (None, expected), where,
             f"model_format={model_format!r} but this model holds {method} 4-bit weights; "
             f"use model_format={expected!r} or leave it unset")
    bits = qc.get("bits", qc.get("w_bit", 4))
    _require(bits == 4, where, f"{bits}-bit weights are not supported (only 4-bit)")
    if method == "awq":
        cfg = _awq(qc, where)
    elif method == "gptq":
        cfg = _gptq(qc, where)
    else:
        cfg = QuantConfig("lmdeploy_int4", int(qc.get("group_size", 32)))
    _require(cfg.group_size in SUPPORTED_GROUP_SIZES, where,
             f"group_size {cfg.group_size} is not supported; supported: {', '.join(map(str, SUPPORTED_GROUP_SIZES))}")
    return replace(cfg, modules_to_not_convert=tuple(qc.get("modules_to_not_convert") or ()))
