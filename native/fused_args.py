"""Host-side pieces the fused decode linears share (gemv.py for 16-bit weights,
int4_gemm.py for 4-bit ones): the rms_norm stage's checks, arguments and unfused
fallback, and the rope epilogue's checks."""
from __future__ import annotations

import torch

from lmdeploy_sdk.native import driver, norm
from lmdeploy_sdk.native.layout import contiguous_aligned


def norm_fits(x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, k: int) -> bool:
    """Whether the norm weight and the residual fit x's K inputs for the rms_norm stage."""
    return (
        norm_weight.dtype == x.dtype
        and norm_weight.shape == (k,)
        and norm_weight.device == x.device
        and (residual is None or (residual.shape == x.shape and residual.dtype == x.dtype))
    )


def unfused_norm(
    x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual) on the norm kernels; without a residual, (rms_norm(x), x)."""
    if residual is None:
        return norm.rms_norm(x, norm_weight, eps), x
    return norm.add_rms_norm(x, residual, norm_weight, eps)


def norm_staging(
    x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, tuple[driver.KernelArg, ...]]:
    """(x, summed, norm_args) for the rms_norm kernels: x contiguous and aligned, summed a new
    tensor for x + residual (x itself without a residual), and the kernels' (sum_out,
    residual, norm weight, eps) arguments."""
    x = contiguous_aligned(x)
    residual = None if residual is None else contiguous_aligned(residual)
    summed = x if residual is None else torch.empty_like(x)
    norm_args = (
        driver.ptr(None if residual is None else summed),
        driver.ptr(residual),
        driver.ptr(contiguous_aligned(norm_weight)),
        driver.f32(eps),
    )
    return x, summed, norm_args


def rope_served(
    x: torch.Tensor, qkv_weight: torch.Tensor, num_heads: int, num_kv_heads: int, positions: torch.Tensor,
    cos_sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
) -> bool:
    """Whether the rope epilogue can write this layer's q and cache entries."""
    rows = x.numel() // x.shape[-1] if x.dim() else 0
    head_dim = k_cache.shape[-1] if len(k_cache.shape) == 4 else 0
    return (
        isinstance(k_cache, torch.Tensor)  # not an int8/int4 cache: those are written by kv_quant's kernel
        and isinstance(v_cache, torch.Tensor)
        and head_dim > 0
        and head_dim % 2 == 0
        and qkv_weight.shape[0] == (num_heads + 2 * num_kv_heads) * head_dim
        and k_cache.dtype == v_cache.dtype == x.dtype
        and v_cache.shape == k_cache.shape
        and k_cache.shape[2] == num_kv_heads
        and k_cache.is_contiguous()
        and v_cache.is_contiguous()
        and k_cache.device == v_cache.device == positions.device == slot_mapping.device == x.device
        and positions.numel() == slot_mapping.numel() == rows
        and cos_sin.dim() == 2
        and cos_sin.shape[1] == head_dim
        and cos_sin.dtype == torch.float32
        and cos_sin.is_contiguous()
        and cos_sin.device == x.device
    )
