"""Decode-time linears (1-2 rows) on `gemv.ptx`, with the pre-norm, the MLP's SiLU-and-mul
and attention's rope + KV-cache write folded in.

At batch 1-2 a decode step reads every weight once and does almost no arithmetic on
it, so nn.Linear is bound by HBM bandwidth. The kernel streams W with 16-byte loads and
nothing else competing (x sits in shared memory), one warp per output row, which gets
closer to the memory's read rate than cuBLAS's general GEMM at these shapes. At that
size the small kernels between the GEMVs cost as much as their launches, so
rms_norm_linear normalises x while staging it (no norm launch),
rms_norm_gated_linear also writes silu(gate) * up (no activation launch) and
rms_norm_rope_store_kv rotates q and k and writes q, k and v where attention reads them
(no rope launch). Other
shapes (more rows, fp32, a non-contiguous or unaligned weight, K % 8 != 0, x too large
for shared memory) run the unfused ops, with torch for the matrix product.
"""
from __future__ import annotations

import math

import torch

from lmdeploy_sdk.native import activation, driver, int4_gemm, rope
from lmdeploy_sdk.native.fused_args import norm_fits, norm_staging, rope_served, unfused_norm
from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES, as_vec8
from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.quant.int4 import Int4Weight

MODULE = "gemv"
# kernels gemv_<dtype>_m1, _m2 (a 4-row build was slower than cuBLAS, tried on an H200)
MAX_ROWS = 2
WARPS = 8  # output rows a CTA works on at once (kGemvWarps in the .cu)
THREADS = 32 * WARPS
def _smem_limit(device: torch.device) -> int:
    """Opt-in shared memory bytes per block of the device (x is staged there)."""
    return driver.smem_limits(driver.device_index(device))[0]


def _resident_ctas(device: torch.device, kernel: str, shared_mem: int) -> int:
    """CTAs of `kernel` the whole GPU holds at once (registers and shared memory permitting)."""
    index = driver.device_index(device)
    per_sm = driver.device_kernels(index).max_active_blocks(MODULE, kernel, THREADS, shared_mem)
    return max(1, per_sm) * driver.sm_count(index)


def num_ctas(n: int, resident: int) -> int:
    """Grid size for n output rows: the fewest rounds of rows over `resident` CTAs, and
    then the fewest CTAs that cover n rows in that many rounds, so that every warp gets
    the same number of rows (+-1) instead of a last, mostly idle round."""
    groups = math.ceil(n / WARPS)  # one row per warp per round
    rounds = math.ceil(groups / resident)
    return math.ceil(groups / rounds)


def _served(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, k: int) -> bool:
    """Whether the kernel covers x [..., K or 2K] @ weight [N, K]^T (+ bias [N])."""
    if x.dtype not in SUPPORTED_DTYPES or x.dim() == 0 or x.shape[-1] == 0 or weight.dim() != 2:
        return False
    rows = x.numel() // x.shape[-1]
    return (
        weight.dtype == x.dtype
        and weight.device == x.device
        and weight.shape[0] >= 1
        and weight.shape[1] == k
        and k % 8 == 0
        and 1 <= rows <= MAX_ROWS
        # never copy the weight: that would cost more than the GEMV itself
        and weight.is_contiguous()
        and weight.data_ptr() % 16 == 0
        and (
            bias is None
            or (bias.dtype == x.dtype and bias.device == x.device and bias.shape == (weight.shape[0],))
        )
        and rows * k * x.element_size() <= _smem_limit(x.device)
    )


def _launch(
    kind: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    norm_args: tuple[driver.KernelArg, ...] = (),
    paired: bool = False,
    out: torch.Tensor | None = None,
    epilogue_args: tuple[driver.KernelArg, ...] = (),
) -> torch.Tensor:
    # x: [..., K]; weight: [N, K] -> [..., N] (paired: [2N, K] -> [..., N], two rows an output)
    # norm_args: (sum_out, residual, norm weight, eps) of the rms_norm kernels, around x;
    # out: where the rope kernel writes q; epilogue_args: its trailing arguments
    n, k = weight.shape
    n = n // 2 if paired else n
    rows = x.numel() // x.shape[-1]
    x2 = as_vec8(x.reshape(rows, x.shape[-1]))  # [M, K or 2K], rows x2.stride(0) apart
    bias = None if bias is None else bias.contiguous()
    if out is None:
        out = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)  # [M, N] in memory
    kernel = f"{kind}_{driver.dtype_suffix(x.dtype)}_m{rows}"
    shared_mem = rows * k * x.element_size()  # x as T
    resident = _resident_ctas(x.device, kernel, shared_mem)
    args = (
        driver.ptr(out),
        *norm_args[:1],
        driver.ptr(x2),
        *norm_args[1:],
        driver.ptr(weight),
        driver.ptr(bias),
        driver.i32(n),
        driver.i32(k),
        driver.i64(x2.stride(0)),
        *epilogue_args,
    )
    grid = num_ctas(n, resident)
    driver.launch(x.device, MODULE, kernel, grid=(grid,), block=(THREADS,), args=args, shared_mem=shared_mem)
    return out


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for 1..MAX_ROWS rows (fp32 accumulation, one rounding); torch otherwise.
    A 4-bit weight goes to int4_gemm (as do the fused ops' below)."""
    # x: [..., K]; weight: [N, K]; bias: [N] or None -> [..., N]
    if isinstance(weight, Int4Weight):
        return int4_gemm.linear(x, weight, bias)
    if not _served(x, weight, bias, x.shape[-1] if x.dim() else -1):
        return reference.linear(x, weight, bias)
    return _launch("gemv", x, weight, bias)


def rms_norm_linear(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(linear(rms_norm(x + residual)), x + residual) in one launch; bit-identical to the
    norm kernel followed by the GEMV when K >= 1800 (both then reduce over 256 threads)."""
    # x, residual: [..., K]; norm_weight: [K]; weight: [N, K] -> ([..., N], [..., K])
    if isinstance(weight, Int4Weight):
        return int4_gemm.rms_norm_linear(x, residual, norm_weight, eps, weight, bias)
    return _norm_linear(x, residual, norm_weight, eps, weight, bias, gated=False)


def rms_norm_gated_linear(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    gate_up_weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(silu_and_mul(linear(rms_norm(x + residual))), x + residual) in one launch, as
    bit-identical to the unfused kernels as rms_norm_linear."""
    # x, residual: [..., K]; gate_up_weight: [2I, K] (gate | up) -> ([..., I], [..., K])
    if isinstance(gate_up_weight, Int4Weight):
        return int4_gemm.rms_norm_gated_linear(x, residual, norm_weight, eps, gate_up_weight, bias)
    if gate_up_weight.dim() != 2 or gate_up_weight.shape[0] % 2:
        raise ValueError(f"gate_up_weight must be [2I, K], got shape {tuple(gate_up_weight.shape)}")
    return _norm_linear(x, residual, norm_weight, eps, gate_up_weight, bias, gated=True)


def _norm_linear(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    gated: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    if not _norm_served(x, residual, norm_weight, weight, bias):
        # the unfused kernels (each falling back where it must), torch's matmul
        normed, summed = unfused_norm(x, residual, norm_weight, eps)
        out = reference.linear(normed, weight, bias)
        return (activation.silu_and_mul(out) if gated else out), summed
    x, summed, norm_args = norm_staging(x, residual, norm_weight, eps)
    kind = "rms_norm_gated_gemv" if gated else "rms_norm_gemv"
    return _launch(kind, x, weight, bias, norm_args, gated), summed


def _norm_served(
    x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> bool:
    k = x.shape[-1] if x.dim() else -1
    return _served(x, weight, bias, k) and norm_fits(x, residual, norm_weight, k)


def rms_norm_rope_store_kv(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    qkv_weight: torch.Tensor,
    bias: torch.Tensor | None,
    num_heads: int,
    num_kv_heads: int,
    positions: torch.Tensor,
    cos_sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """reference.rms_norm_rope_store_kv in one launch at 1-2 rows (the qkv GEMV's warps pair
    rows i and i + D/2 of a head and rotate them); else rms_norm_linear, then rope_store_kv."""
    # x, residual: [T, K]; qkv_weight: [(Hq + 2 Hkv) * D, K] -> (q [T, Hq, D], x + residual [T, K])
    if isinstance(qkv_weight, Int4Weight):
        return int4_gemm.rms_norm_rope_store_kv(x, residual, norm_weight, eps, qkv_weight, bias, num_heads,
                                                num_kv_heads, positions, cos_sin, k_cache, v_cache, slot_mapping)
    if not (
        _norm_served(x, residual, norm_weight, qkv_weight, bias)
        and rope_served(x, qkv_weight, num_heads, num_kv_heads, positions, cos_sin, k_cache, v_cache, slot_mapping)
    ):
        qkv, summed = rms_norm_linear(x, residual, norm_weight, eps, qkv_weight, bias)
        q, k, v = reference.qkv_heads(qkv, num_heads, num_kv_heads, k_cache.shape[-1])
        return rope.rope_store_kv(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping), summed
    x, summed, norm_args = norm_staging(x, residual, norm_weight, eps)
    head_dim = k_cache.shape[-1]
    q = torch.empty((x.shape[0], num_heads, head_dim), dtype=x.dtype, device=x.device)
    epilogue_args = (
        driver.ptr(k_cache),
        driver.ptr(v_cache),
        driver.ptr(positions.to(torch.int64).contiguous()),
        driver.ptr(slot_mapping.to(torch.int64).contiguous()),
        driver.ptr(cos_sin),
        driver.i32(num_heads),
        driver.i32(num_kv_heads),
        driver.i32(head_dim),
    )
    _launch("rms_norm_rope_gemv", x, qkv_weight, bias, norm_args, paired=True, out=q, epilogue_args=epilogue_args)
    return q, summed
