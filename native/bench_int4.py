"""The W4A16 linears against cuBLAS bf16 at the same rows (`bench_kernels --only int4`).

Llama-3-8B's projections (K x N = 4096 x 6144, 4096 x 4096, 4096 x 28672, 14336 x 4096),
group 128, at 1..1024 rows. Each call reads another copy of the weight, so none of it is
still in L2 (as layer after layer in a real step), and runs inside a CUDA graph. The
figure of merit is the speedup over F.linear on the bf16 weight (the ideal at few rows is
the byte ratio, about 3.9x at group 128); `w_GBps` counts the packed weight and its scales.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from lmdeploy_sdk import ops
from lmdeploy_sdk.native import bench_kernels, int4_gemm
from lmdeploy_sdk.quant.int4 import Int4Weight, RowsInt4

# (name, N, K) as in bench_kernels.GEMV_SHAPES: the Llama-3-8B decode projections
SHAPES = (("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096), ("down", 4096, 14336))
ROWS = (1, 4, 16, 17, 64, 128, 256, 512, 1024)
GROUP = 128


def random_int4(n: int, k: int, group: int = GROUP, dtype: torch.dtype = torch.bfloat16) -> Int4Weight:
    rows = RowsInt4(torch.randint(-(2**31), 2**31 - 1, (n, k // 8), dtype=torch.int32, device="cuda"),
                    torch.full((n, k // group), k**-0.5 / 4.6, device="cuda"),
                    torch.full((n, k // group), -7.5 * k**-0.5 / 4.6, device="cuda"))
    return Int4Weight.from_rows(rows, dtype)


def _int4_copies(n: int, k: int, min_bytes: int = 512 << 20) -> list[Int4Weight]:
    """Enough distinct 4-bit weights that cycling through them reads each from HBM, not L2."""
    nbytes = n * k // 2 + (k // GROUP) * n * 4  # int4 values + a (scale, min) pair of bf16 per group
    return [random_int4(n, k) for _ in range(max(2, -(-min_bytes // nbytes)))]


def bench_int4(copy_gbs: float, rows_list: tuple[int, ...] = ROWS) -> list[dict]:
    results = []
    for name, n, k in SHAPES:
        w4 = _int4_copies(n, k)
        w16 = bench_kernels.weight_copies(n, k, torch.bfloat16)
        w4_bytes = w4[0].nbytes
        cases = [(name, lambda x, w: ops.linear(x, w), F.linear)]
        if name == "gate_up":  # norm, projection and activation in one kernel vs the three (cuBLAS)
            norm_w = torch.ones(k, device="cuda", dtype=torch.bfloat16)
            cases.append(("norm+gate_up+silu", lambda x, w: ops.rms_norm_gated_linear(x, x, norm_w, 1e-5, w)[0],
                          lambda x, w: ops.silu_and_mul(F.linear(ops.add_rms_norm(x, x, norm_w, 1e-5)[0], w))))
        for label, ours, theirs in cases:
            for rows in rows_list:
                x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
                c4, c16 = itertools.cycle(w4), itertools.cycle(w16)
                ms = bench_kernels.time_ms(lambda: ours(x, next(c4)))
                torch_ms = bench_kernels.time_ms(lambda: theirs(x, next(c16)))
                results.append({
                    "kernel": "int4_gemm" if rows <= int4_gemm.MAX_TOKENS else "int4_dequant+cublas",
                    "shape": f"{label} N={n} K={k} M={rows} g{GROUP}",
                    "ms": round(ms, 4),
                    "w_GBps": round(w4_bytes / ms / 1e6, 1),
                    "pct_of_copy": round(100 * w4_bytes / ms / 1e6 / copy_gbs, 1),
                    "cublas_bf16_ms": round(torch_ms, 4),
                    "speedup": round(torch_ms / ms, 3),
                })
        del w4, w16
        torch.cuda.empty_cache()
    return results


def print_int4(rows: list[dict]) -> None:
    print(f"{'int4 shape (vs cuBLAS bf16)':<48}{'kernel':>20}{'ms':>9}{'GB/s':>7}{'% copy':>8}{'bf16 ms':>9}"
          f"{'speedup':>8}")
    for r in rows:
        print(f"{r['shape']:<48}{r['kernel']:>20}{r['ms']:>9.4f}{r['w_GBps']:>7.0f}{r['pct_of_copy']:>8.1f}"
              f"{r['cublas_bf16_ms']:>9.4f}{r['speedup']:>8.2f}")
