"""W4A16 linears on `int4_gemm.ptx`: the ops of native/gemv.py for a 4-bit weight
(lmdeploy_sdk.quant.int4.Int4Weight), with the same fusions.

Up to MAX_TOKENS rows the int4 kernel streams the packed weight straight into tensor-core
fragments (see the .cu header); a step's norm, SiLU-and-mul and rope + KV-cache write fold
into it as they do into the bf16 GEMV. More rows dequantize the weight with our kernel and
multiply with cuBLAS (torch): a tensor-core int4 GEMM for large batches is future work,
and docs/performance.md says where this costs time. Shapes the kernel does not cover
(K % 8 != 0, a dtype other than fp16/bf16) take the same dequantize + cuBLAS path.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmdeploy_sdk.native import activation, driver, rope
from lmdeploy_sdk.native.fused_args import norm_fits, norm_staging, rope_served, unfused_norm
from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES, as_vec8
from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.quant.int4 import ROW_TILE, Int4Weight

MODULE = "int4_gemm"
LOADS = 8  # 16-byte weight vectors per lane and work item (kI4Loads)
TOKEN_TILES = (1, 2)  # n8 token tiles a kernel build covers (MT)
MAX_TOKENS = 8 * TOKEN_TILES[-1]
COUNTER_SLOTS = 1 << 16  # row blocks one launch may have (split-K arrival counters)
PAIRED_KINDS = ("rms_norm_gated_int4_gemm", "rms_norm_rope_int4_gemm")  # epilogues on row-tile pairs
DEQUANT_THREADS = 256


@dataclass(frozen=True)
class Shape:
    """A token-tile build's CTA (I4Shape in the .cu)."""

    warps: int
    row_tiles: int  # kRB
    warps_per_tile: int  # kWPT
    k_slice: int  # kKS

    @property
    def threads(self) -> int:
        return 32 * self.warps

    def shared_mem(self, mt: int) -> int:
        """Bytes of dynamic shared memory: x's slice (16-bit, rows padded by 8), its fp32 sums
        per group of 32 or more, and two buffers of the warps' partial sums."""
        tokens = 8 * mt
        x_bytes = tokens * (self.k_slice + 8) * 2
        x_sum_bytes = tokens * (self.k_slice // 32) * 4
        return x_bytes + x_sum_bytes + 2 * self.warps_per_tile * self.row_tiles * ROW_TILE * tokens * 4


@functools.cache
def shape(mt: int) -> Shape:
    if mt not in TOKEN_TILES:
        raise ValueError(f"no int4 kernel build for {mt} token tiles; builds: {TOKEN_TILES}")
    warps, rb = 16, 2
    wpt = warps // rb
    return Shape(warps, rb, wpt, 64 * LOADS * wpt)


def token_tiles(rows: int) -> int:
    """The smallest build's MT for `rows` tokens (1 <= rows <= MAX_TOKENS)."""
    return next(mt for mt in TOKEN_TILES if rows <= 8 * mt)


@functools.cache
def _counters(device_index: int) -> torch.Tensor:
    """Split-K arrival counters of one GPU: zero between launches (the last CTA of a row block
    resets its own). One stream uses them at a time, as the engine does. Allocated outside
    CUDA-graph capture: the runner calls prepare() before it captures."""
    return torch.zeros(COUNTER_SLOTS, dtype=torch.int32, device=torch.device("cuda", device_index))


def prepare(device: torch.device) -> None:
    """Allocate this GPU's counters now (before any CUDA graph is captured)."""
    _counters(driver.device_index(device))


def _served(x: torch.Tensor, weight: Int4Weight, bias: torch.Tensor | None) -> bool:
    k = weight.in_features
    if x.dtype not in SUPPORTED_DTYPES or x.dim() == 0 or x.shape[-1] != k or k % 8:
        return False
    rows = x.numel() // k
    return (
        weight.dtype == x.dtype
        and weight.device == x.device
        and 1 <= rows <= MAX_TOKENS
        and (bias is None or (bias.dtype == x.dtype and bias.shape == (weight.out_features,)))
    )


def dequantize(weight: Int4Weight) -> torch.Tensor:
    """[N, K] in the weight's dtype, on our kernel (the reference's values within rounding:
    q * s + m is one fma in the activation dtype)."""
    n, k = weight.shape
    out = torch.empty(n, k, dtype=weight.dtype, device=weight.device)
    tiles, chunks = weight.qweight.shape[:2]
    units = tiles * chunks  # (tile, chunk) pairs: a warp each
    blocks = min(-(-units // (DEQUANT_THREADS // 32)), 16 * driver.sm_count(driver.device_index(weight.device)))
    args = (driver.ptr(out), driver.ptr(weight.qweight), driver.ptr(weight.scale_min), driver.i32(n),
            driver.i32(k), driver.i32(weight.scale_min.shape[1]), driver.i32(chunks),
            driver.i32(weight.group_size.bit_length() - 1), driver.i64(units))
    driver.launch(weight.device, MODULE, f"int4_dequant_{driver.dtype_suffix(weight.dtype)}", grid=(blocks,),
                  block=(DEQUANT_THREADS,), args=args)
    return out


def _dequantized_linear(x: torch.Tensor, weight: Int4Weight, bias: torch.Tensor | None) -> torch.Tensor:
    if x.dtype not in SUPPORTED_DTYPES or weight.dtype not in SUPPORTED_DTYPES:
        return reference.linear(x, weight, bias)
    return F.linear(x, dequantize(weight).to(x.dtype), bias)


def _launch(
    kind: str,
    x: torch.Tensor,
    weight: Int4Weight,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    units: int,
    half_tiles: int,
    n_out: int,
    norm_args: tuple[driver.KernelArg, ...] = (),
    epilogue_args: tuple[driver.KernelArg, ...] = (),
) -> torch.Tensor:
    # x: [..., K] -> out; units: row tiles (plain) or row-tile pairs (paired kinds)
    k = weight.in_features
    rows = x.numel() // k
    x2 = as_vec8(x.reshape(rows, k))  # [M, K], rows x2.stride(0) apart
    mt = token_tiles(rows)
    cta = shape(mt)
    tiles_per_block = cta.row_tiles // 2 if kind in PAIRED_KINDS else cta.row_tiles
    row_blocks = -(-units // tiles_per_block)
    chunks = weight.qweight.shape[1]
    slices = -(-chunks * 64 // cta.k_slice)
    items = row_blocks * slices
    if row_blocks > COUNTER_SLOTS:
        raise ValueError(f"a {tuple(weight.shape)} weight needs {row_blocks} row blocks; at most {COUNTER_SLOTS}")
    index = driver.device_index(x.device)
    kernel = f"{kind}_{driver.dtype_suffix(x.dtype)}_m{mt}"
    shared_mem = cta.shared_mem(mt)
    resident = driver.device_kernels(index).max_active_blocks(MODULE, kernel, cta.threads, shared_mem)
    grid = min(items, max(1, resident) * driver.sm_count(index))
    # partial sums of row blocks split between CTAs (only then: a row block within one CTA's run needs none)
    ws = torch.empty(items * rows * (cta.row_tiles * ROW_TILE + 1) if slices > 1 else 1,
                     dtype=torch.float32, device=x.device)
    args = (
        driver.ptr(out), driver.ptr(x2), driver.i64(x2.stride(0)), driver.ptr(weight.qweight),
        driver.ptr(weight.scale_min), driver.ptr(None if bias is None else bias.contiguous()),
        driver.i32(rows), driver.i32(n_out), driver.i32(k), driver.i32(weight.scale_min.shape[1]),
        driver.i32(chunks), driver.i32(weight.group_size.bit_length() - 1), driver.i32(units),
        driver.i32(half_tiles), driver.i32(row_blocks), driver.i32(slices), driver.ptr(ws),
        driver.ptr(_counters(index)), *norm_args, *epilogue_args,
    )
    driver.launch(x.device, MODULE, kernel, grid=(grid,), block=(cta.threads,), args=args, shared_mem=shared_mem)
    return out


def linear(x: torch.Tensor, weight: Int4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """reference.linear for a 4-bit weight: our int4 kernel up to MAX_TOKENS rows, else
    dequantize + cuBLAS."""
    # x: [..., K] -> [..., N]
    if not _served(x, weight, bias):
        return _dequantized_linear(x, weight, bias)
    n = weight.out_features
    out = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    return _launch("int4_gemm", x, weight, bias, out, weight.qweight.shape[0], 0, n)


def _norm_served(x, residual, norm_weight, weight: Int4Weight, bias) -> bool:
    return _served(x, weight, bias) and norm_fits(x, residual, norm_weight, weight.in_features)


def rms_norm_linear(
    x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float, weight: Int4Weight,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """reference.rms_norm_linear for a 4-bit weight, one launch up to MAX_TOKENS rows."""
    # x, residual: [..., K] -> ([..., N], [..., K])
    if not _norm_served(x, residual, norm_weight, weight, bias):
        normed, summed = unfused_norm(x, residual, norm_weight, eps)
        return linear(normed, weight, bias), summed
    x, summed, norm_args = norm_staging(x, residual, norm_weight, eps)
    n = weight.out_features
    out = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    _launch("rms_norm_int4_gemm", x, weight, bias, out, weight.qweight.shape[0], 0, n, norm_args)
    return out, summed


def rms_norm_gated_linear(
    x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
    gate_up_weight: Int4Weight, bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """reference.rms_norm_gated_linear for a 4-bit [gate | up] weight; one launch up to
    MAX_TOKENS rows when I % 16 == 0 (gate and up tiles pair up)."""
    # x, residual: [..., K]; gate_up_weight: [2I, K] -> ([..., I], [..., K])
    n2 = gate_up_weight.out_features
    if n2 % 2:
        raise ValueError(f"gate_up_weight must be [2I, K], got shape {tuple(gate_up_weight.shape)}")
    i = n2 // 2
    if i % ROW_TILE or not _norm_served(x, residual, norm_weight, gate_up_weight, bias):
        gate_up, summed = rms_norm_linear(x, residual, norm_weight, eps, gate_up_weight, bias)
        return activation.silu_and_mul(gate_up), summed
    x, summed, norm_args = norm_staging(x, residual, norm_weight, eps)
    out = torch.empty((*x.shape[:-1], i), dtype=x.dtype, device=x.device)
    _launch("rms_norm_gated_int4_gemm", x, gate_up_weight, bias, out, i // ROW_TILE, i // ROW_TILE, i, norm_args)
    return out, summed


def rms_norm_rope_store_kv(
    x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float, qkv_weight: Int4Weight,
    bias: torch.Tensor | None, num_heads: int, num_kv_heads: int, positions: torch.Tensor, cos_sin: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """reference.rms_norm_rope_store_kv for a 4-bit [q | k | v] weight; one launch up to
    MAX_TOKENS rows when head_dim % 32 == 0 (a head's two halves are whole tiles)."""
    # x, residual: [T, K] -> (q [T, Hq, D], x + residual [T, K])
    head_dim = k_cache.shape[-1] if len(k_cache.shape) == 4 else 0
    if not (
        head_dim % 32 == 0
        and _norm_served(x, residual, norm_weight, qkv_weight, bias)
        and rope_served(x, qkv_weight, num_heads, num_kv_heads, positions, cos_sin, k_cache, v_cache, slot_mapping)
    ):
        qkv, summed = rms_norm_linear(x, residual, norm_weight, eps, qkv_weight, bias)
        q, k, v = reference.qkv_heads(qkv, num_heads, num_kv_heads, head_dim)
        return rope.rope_store_kv(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping), summed
    x, summed, norm_args = norm_staging(x, residual, norm_weight, eps)
    q = torch.empty((x.shape[0], num_heads, head_dim), dtype=x.dtype, device=x.device)
    epilogue_args = (
        driver.ptr(k_cache), driver.ptr(v_cache), driver.ptr(positions.to(torch.int64).contiguous()),
        driver.ptr(slot_mapping.to(torch.int64).contiguous()), driver.ptr(cos_sin), driver.i32(num_heads),
        driver.i32(num_kv_heads), driver.i32(head_dim),
    )
    n = qkv_weight.out_features
    _launch("rms_norm_rope_int4_gemm", x, qkv_weight, bias, q, n // (2 * ROW_TILE), head_dim // 32, n,
            norm_args, epilogue_args)
    return q, summed
