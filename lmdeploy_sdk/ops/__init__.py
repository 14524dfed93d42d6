"""The ops the models are built from, each defined once and dispatched on device.

Contract: every op takes and returns torch tensors; shapes and semantics are those
of the same-named function in `reference.py`, which is the definition. On a CUDA
tensor the op runs our PTX kernel from lmdeploy_sdk.native when one is available
for that op and dtype; otherwise (CPU, or a dtype the kernel lacks) it runs the
reference. Models call only these names, so kernels slot in without touching them.
"""
from __future__ import annotations

import torch

from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.ops.metadata import AttentionMetadata
from lmdeploy_sdk.ops.reference import qkv_heads  # views only: the same on every device

__all__ = [
    "AttentionMetadata",
    "qkv_heads",
    "rms_norm",
    "add_rms_norm",
    "apply_rope",
    "silu_and_mul",
    "store_kv",
    "rope_store_kv",
    "paged_attention",
    "linear",
    "rms_norm_linear",
    "rms_norm_gated_linear",
    "rms_norm_rope_store_kv",
    "argmax",
]


def _native(name: str, x: torch.Tensor):
    """The native kernel for op `name` on x's device and dtype, or None."""
    if x.device.type != "cuda":
        return None
    from lmdeploy_sdk import native

    return native.get_op(name, x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    fn = _native("rms_norm", x)
    return fn(x, weight, eps) if fn else reference.rms_norm(x, weight, eps)


def add_rms_norm(x, residual, weight, eps):
    fn = _native("add_rms_norm", x)
    return fn(x, residual, weight, eps) if fn else reference.add_rms_norm(x, residual, weight, eps)


def apply_rope(q, k, positions, cos_sin):
    fn = _native("apply_rope", q)
    return fn(q, k, positions, cos_sin) if fn else reference.apply_rope(q, k, positions, cos_sin)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    fn = _native("silu_and_mul", x)
    return fn(x) if fn else reference.silu_and_mul(x)


def store_kv(k, v, k_cache, v_cache, slot_mapping) -> None:
    fn = _native("store_kv", k)
    (fn or reference.store_kv)(k, v, k_cache, v_cache, slot_mapping)


def rope_store_kv(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping) -> torch.Tensor:
    fn = _native("rope_store_kv", q) or reference.rope_store_kv
    return fn(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping)


def paged_attention(q, k_cache, v_cache, meta: AttentionMetadata, scale: float):
    fn = _native("paged_attention", q)
    return (fn or reference.paged_attention)(q, k_cache, v_cache, meta, scale)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    fn = _native("linear", x)
    return (fn or reference.linear)(x, weight, bias)


def rms_norm_linear(x, residual, norm_weight, eps, weight, bias=None) -> tuple[torch.Tensor, torch.Tensor]:
    fn = _native("rms_norm_linear", x) or reference.rms_norm_linear
    return fn(x, residual, norm_weight, eps, weight, bias)


def rms_norm_gated_linear(
    x, residual, norm_weight, eps, gate_up_weight, bias=None
) -> tuple[torch.Tensor, torch.Tensor]:
    fn = _native("rms_norm_gated_linear", x) or reference.rms_norm_gated_linear
    return fn(x, residual, norm_weight, eps, gate_up_weight, bias)


def rms_norm_rope_store_kv(
    x, residual, norm_weight, eps, qkv_weight, bias, num_heads, num_kv_heads, positions, cos_sin, k_cache, v_cache,
    slot_mapping,
) -> tuple[torch.Tensor, torch.Tensor]:
    fn = _native("rms_norm_rope_store_kv", x) or reference.rms_norm_rope_store_kv
    return fn(x, residual, norm_weight, eps, qkv_weight, bias, num_heads, num_kv_heads, positions, cos_sin,
              k_cache, v_cache, slot_mapping)


def argmax(logits: torch.Tensor) -> torch.Tensor:
    fn = _native("argmax", logits)
    return (fn or reference.argmax)(logits)
