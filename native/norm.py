"""RMSNorm and residual-add + RMSNorm on the fused `norm.ptx` kernel."""
from __future__ import annotations

import torch

from lmdeploy_sdk.native import driver
from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES, contiguous_aligned
from lmdeploy_sdk.ops import reference

MAX_THREADS = 256
MAX_HIDDEN = MAX_THREADS * 8 * 8  # kNormMaxVecs vectors of 8 per thread


def _served(x: torch.Tensor, weight: torch.Tensor) -> bool:
    hidden = x.shape[-1] if x.dim() else 0
    return (
        x.dtype in SUPPORTED_DTYPES
        and weight.dtype == x.dtype
        and weight.shape == (hidden,)
        and weight.device == x.device
        and 0 < hidden <= MAX_HIDDEN
        and hidden % 8 == 0
    )


def _launch(
    out: torch.Tensor,
    sum_out: torch.Tensor | None,
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
) -> None:
    # x, residual, out, sum_out: contiguous [..., hidden]; weight: [hidden]
    hidden = x.shape[-1]
    rows = x.numel() // hidden
    vecs = hidden // 8
    threads = min(MAX_THREADS, (vecs + 31) // 32 * 32)
    driver.launch(
        x.device,
        "norm",
        f"rms_norm_{driver.dtype_suffix(x.dtype)}",
        grid=(rows,),
        block=(threads,),
        args=(
            driver.ptr(out),
            driver.ptr(sum_out),
            driver.ptr(x),
            driver.ptr(residual),
            driver.ptr(weight),
            driver.i32(hidden),
            driver.f32(eps),
        ),
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # x: [..., H]; weight: [H] -> [..., H]
    if not _served(x, weight):
        return reference.rms_norm(x, weight, eps)
    x = contiguous_aligned(x)
    out = torch.empty_like(x)
    _launch(out, None, x, None, contiguous_aligned(weight), eps)
    return out


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    # x, residual: [..., H] -> (rms_norm(x + residual), x + residual)
    if not (
        _served(x, weight)
        and residual.dtype == x.dtype
        and residual.shape == x.shape
        and residual.device == x.device
    ):
        return reference.add_rms_norm(x, residual, weight, eps)
    x, residual = contiguous_aligned(x), contiguous_aligned(residual)
    out = torch.empty_like(x)
    summed = torch.empty_like(x)
    _launch(out, summed, x, residual, contiguous_aligned(weight), eps)
    return out, summed
