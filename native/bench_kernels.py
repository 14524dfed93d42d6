"""Micro-benchmark of the attention, GEMV and int4 kernels on one GPU; prints a table and writes JSON.

    python -m lmdeploy_sdk.native.bench_kernels [--json results.json] [--quick] [--only gemv|int4|...]

Decode attention is memory-bound: its figure of merit is KV bytes read per second,
set against a large device-to-device copy (bytes read + written per second). Prefill
attention is compute-bound: causal TFLOP/s against PyTorch's scaled_dot_product_attention
on its flash backend with the same shapes (K/V expanded to all query heads for it).
Kernels are timed as CUDA-graph replays (no Python launch gaps) with CUDA events;
each figure is the median of several timed runs.
The decode GEMVs (Llama-3-8B's linears at 1 and 2 rows) are memory-bound too: weight
bytes read per second, ours against torch's F.linear (cuBLAS), each call on another copy
of the weight so that none of it is still in L2 (as in a real step, layer after layer).
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from lmdeploy_sdk import ops
from lmdeploy_sdk.native import driver, gemv
from lmdeploy_sdk.native import paged_attention as native_attention
from lmdeploy_sdk.ops.metadata import AttentionMetadata


def time_ms(fn: Callable[[], object], iters: int = 20, repeats: int = 7, graph: bool = True) -> float:
    """Median milliseconds per call; fn is captured into a CUDA graph when `graph`."""
    fn()
    torch.cuda.synchronize()
    run = fn
    if graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(iters):
                fn()
        run = g.replay
    else:
        def run() -> None:
            for _ in range(iters):
                fn()
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / iters)
    return statistics.median(times)


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy rate, counting bytes read plus bytes written."""
    src = torch.randn(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), iters=10, graph=False)
    return 2 * nbytes / ms / 1e6


def paged_batch(
    batch: int, q_len: int, kv_len: int, hq: int, hkv: int, head_dim: int, block_size: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, AttentionMetadata]:
    """Equal-length sequences over shuffled cache blocks."""
    blocks_per_seq = math.ceil(kv_len / block_size)
    num_blocks = batch * blocks_per_seq
    tables = torch.randperm(num_blocks, device="cuda").view(batch, blocks_per_seq).to(torch.int32)
    k_cache = torch.randn((num_blocks, block_size, hkv, head_dim), device="cuda", dtype=dtype)
    v_cache = torch.randn_like(k_cache)
    q = torch.randn((batch * q_len, hq, head_dim), device="cuda", dtype=dtype)
    meta = AttentionMetadata(
        cu_seqlens_q=torch.arange(0, (batch + 1) * q_len, q_len, device="cuda", dtype=torch.int32),
        kv_lens=torch.full((batch,), kv_len, device="cuda", dtype=torch.int32),
        block_tables=tables,
        slot_mapping=torch.zeros(batch * q_len, device="cuda", dtype=torch.int64),
        q_lens_cpu=[q_len] * batch,
        kv_lens_cpu=[kv_len] * batch,
        max_q_len=q_len,
        max_kv_len=kv_len,
        block_size=block_size,
    )
    return q, k_cache, v_cache, meta


def bench_decode(
    batch: int, kv_len: int, hq: int, hkv: int, head_dim: int, copy_gbs: float, splits: list[int | None]
) -> list[dict]:
    q, k_cache, v_cache, meta = paged_batch(batch, 1, kv_len, hq, hkv, head_dim, 64, torch.bfloat16)
    kv_bytes = 2 * batch * kv_len * hkv * head_dim * k_cache.element_size()
    rows = []
    for num_splits in splits:
        ms = time_ms(lambda: native_attention.paged_decode(q, k_cache, v_cache, meta, 0.088, num_splits))
        gbs = kv_bytes / ms / 1e6
        rows.append(
            {
                "kernel": "decode",
                "shape": f"B={batch} ctx={kv_len} Hq={hq} Hkv={hkv} D={head_dim} bf16",
                "num_splits": num_splits or "auto",
                "ms": round(ms, 4),
                "kv_GBps": round(gbs, 1),
                "pct_of_copy": round(100 * gbs / copy_gbs, 1),
            }
        )
    return rows


def bench_prefill(batch: int, seq_len: int, hq: int, hkv: int, head_dim: int) -> dict:
    """`batch` prompts of seq_len tokens each: our prefill as dispatched (and on an H100/H200
    each of its two kernels) against SDPA's flash backend."""
    q, k_cache, v_cache, meta = paged_batch(batch, seq_len, seq_len, hq, hkv, head_dim, 64, torch.bfloat16)
    # causal: QK^T and PV over the lower triangle
    flops = batch * 4 * hq * head_dim * seq_len * (seq_len + 1) / 2
    row = {"kernel": "prefill", "shape": f"B={batch} L={seq_len} Hq={hq} Hkv={hkv} D={head_dim} bf16 causal"}
    kernels = [None]
    if driver.device_runs_sm90a(driver.device_index(q.device)) and head_dim in native_attention.WGMMA_PREFILL_TILES:
        kernels += list(native_attention.PREFILL_KERNELS)
    for kernel in kernels:
        ms = time_ms(lambda: native_attention.paged_prefill(q, k_cache, v_cache, meta, head_dim**-0.5, kernel=kernel))
        key = "" if kernel is None else f"{kernel}_"
        row[f"{key}ms"], row[f"{key}TFLOPs"] = round(ms, 4), round(flops / ms / 1e9, 1)
    # SDPA gets contiguous K/V already expanded to Hq heads (its flash path has no paging).
    order = meta.block_tables.long()  # [B, blocks]
    k = k_cache[order].flatten(1, 2)[:, :seq_len].repeat_interleave(hq // hkv, dim=2).transpose(1, 2)
    v = v_cache[order].flatten(1, 2)[:, :seq_len].repeat_interleave(hq // hkv, dim=2).transpose(1, 2)
    qs = q.view(batch, seq_len, hq, head_dim).transpose(1, 2).contiguous()
    k, v = k.contiguous(), v.contiguous()
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        sdpa_ms = time_ms(lambda: F.scaled_dot_product_attention(qs, k, v, is_causal=True))
    row["sdpa_flash_ms"], row["sdpa_flash_TFLOPs"] = round(sdpa_ms, 4), round(flops / sdpa_ms / 1e9, 1)
    return row


# Llama-3-8B's decode linears: (name, N, K) of the [N, K] weight.
GEMV_SHAPES = [
    ("qkv", 6144, 4096),
    ("o", 4096, 4096),
    ("gate_up", 28672, 4096),
    ("down", 4096, 14336),
    ("lm_head", 128256, 4096),
]


def weight_copies(n: int, k: int, dtype: torch.dtype, min_bytes: int = 512 << 20) -> list[torch.Tensor]:
    """Enough distinct [N, K] weights that cycling through them reads each from HBM, not L2."""
    count = max(2, math.ceil(min_bytes / (n * k * torch.empty((), dtype=dtype).element_size())))
    return [torch.randn((n, k), device="cuda", dtype=dtype) * k**-0.5 for _ in range(count)]


def bench_gemv(rows: int, copy_gbs: float, dtype: torch.dtype = torch.bfloat16) -> list[dict]:
    results = []
    for name, n, k in GEMV_SHAPES:
        weights = weight_copies(n, k, dtype)
        w_bytes = weights[0].numel() * weights[0].element_size()
        x = torch.randn((rows, k), device="cuda", dtype=dtype)
        cases = [(name, x, gemv.linear, F.linear, gemv._served(x, weights[0], None, k))]
        if name == "gate_up":  # norm, projection and activation in one kernel vs the three
            norm_w = torch.ones(k, device="cuda", dtype=dtype)
            cases.append(
                (
                    "norm+gate_up+silu",
                    x,
                    lambda a, w: gemv.rms_norm_gated_linear(a, a, norm_w, 1e-5, w)[0],
                    lambda a, w: ops.silu_and_mul(F.linear(ops.add_rms_norm(a, a, norm_w, 1e-5)[0], w)),
                    gemv._served(x, weights[0], None, k),
                )
            )
        for label, inp, ours, theirs, served in cases:
            times = []
            for fn in (ours, theirs):
                cycle = itertools.cycle(weights)
                times.append(time_ms(lambda fn=fn, cycle=cycle, inp=inp: fn(inp, next(cycle))))
            ms, torch_ms = times
            gbs, torch_gbs = w_bytes / ms / 1e6, w_bytes / torch_ms / 1e6
            results.append(
                {
                    "kernel": "gemv",
                    "shape": f"{label} N={n} K={k} M={rows} {str(dtype).removeprefix('torch.')}",
                    "native": served,  # False: ours fell back to torch for this shape on this GPU
                    "ms": round(ms, 4),
                    "w_GBps": round(gbs, 1),
                    "pct_of_copy": round(100 * gbs / copy_gbs, 1),
                    "torch_ms": round(torch_ms, 4),
                    "torch_w_GBps": round(torch_gbs, 1),
                    "torch_pct_of_copy": round(100 * torch_gbs / copy_gbs, 1),
                    "speedup": round(torch_ms / ms, 3),
                }
            )
        del weights
        torch.cuda.empty_cache()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="the headline shapes only")
    parser.add_argument("--only", choices=("decode", "prefill", "gemv", "int4"), help="run one group of benchmarks")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    torch.manual_seed(0)
    copy_gbs = copy_bandwidth_gbs()
    decode, prefill, gemv_rows, int4_rows = [], [], [], []
    if args.only in (None, "decode"):
        decode = bench_decode(32, 4096, 32, 8, 128, copy_gbs, [None, 1, 2, 3, 4, 8])
        if not args.quick:
            decode += bench_decode(1, 16384, 32, 8, 128, copy_gbs, [None])
            decode += bench_decode(64, 1024, 32, 8, 128, copy_gbs, [None])
            decode += bench_decode(16, 2048, 32, 32, 128, copy_gbs, [None])
            decode += bench_decode(32, 4096, 64, 8, 128, copy_gbs, [None])
            decode += bench_decode(32, 4096, 16, 2, 64, copy_gbs, [None])
    if args.only in (None, "prefill"):
        prefill = [bench_prefill(1, 4096, 32, 8, 128)]
        if not args.quick:
            prefill += [bench_prefill(1, 1024, 32, 8, 128), bench_prefill(1, 8192, 32, 8, 128),
                        bench_prefill(1, 4096, 16, 16, 64)]
            # batches of short prompts, as the engine's prefill steps carry them
            prefill += [bench_prefill(16, 512, 32, 8, 128), bench_prefill(32, 256, 32, 8, 128),
                        bench_prefill(64, 128, 32, 8, 128)]
    if args.only in (None, "gemv"):
        gemv_rows = bench_gemv(1, copy_gbs)
        if not args.quick:
            gemv_rows += bench_gemv(2, copy_gbs)
    if args.only in (None, "int4"):
        from lmdeploy_sdk.native.bench_int4 import bench_int4

        int4_rows = bench_int4(copy_gbs, (1, 4, 16)) if args.quick else bench_int4(copy_gbs)
    result = {
        "gpu": torch.cuda.get_device_name(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "copy_GBps": round(copy_gbs, 1),
        "decode": decode,
        "prefill": prefill,
        "gemv": gemv_rows,
        "int4": int4_rows,
    }
    print(f"{result['gpu']}  torch {result['torch']}  {result['date']}")
    print(f"device-to-device copy: {copy_gbs:.0f} GB/s (read + write)")
    print(f"{'decode shape':<44}{'splits':>7}{'ms':>9}{'KV GB/s':>9}{'% copy':>8}")
    for r in decode:
        print(f"{r['shape']:<44}{r['num_splits']!s:>7}{r['ms']:>9.3f}{r['kv_GBps']:>9.0f}{r['pct_of_copy']:>8.1f}")
    print(f"{'prefill shape (TFLOP/s)':<48}{'ms':>8}{'ours':>7}{'wgmma':>7}{'mma.sync':>9}{'sdpa ms':>8}{'sdpa':>7}{'ratio':>7}")
    for r in prefill:
        per_kernel = "".join(f"{r.get(f'{k}_TFLOPs', float('nan')):>{w}.1f}" for k, w in (("wgmma", 7), ("mma_sync", 9)))
        print(f"{r['shape']:<48}{r['ms']:>8.3f}{r['TFLOPs']:>7.1f}{per_kernel}"
              f"{r['sdpa_flash_ms']:>8.3f}{r['sdpa_flash_TFLOPs']:>7.1f}{r['sdpa_flash_ms'] / r['ms']:>7.2f}")
    print(f"{'gemv shape (GB/s: weight bytes read)':<44}{'ms':>9}{'GB/s':>7}{'% copy':>8}"
          f"{'torch ms':>10}{'GB/s':>7}{'% copy':>8}{'speedup':>8}")
    for r in gemv_rows:
        shape = r["shape"] + ("" if r["native"] else " (torch)")
        print(f"{shape:<44}{r['ms']:>9.4f}{r['w_GBps']:>7.0f}{r['pct_of_copy']:>8.1f}"
              f"{r['torch_ms']:>10.4f}{r['torch_w_GBps']:>7.0f}{r['torch_pct_of_copy']:>8.1f}{r['speedup']:>8.2f}")
    if int4_rows:
        from lmdeploy_sdk.native.bench_int4 import print_int4

        print_int4(int4_rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
