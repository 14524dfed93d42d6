"""Decode attention on a bf16 KV cache vs an int8 and an int4 one, on one GPU; prints a markdown table.

    python -m lmdeploy_sdk.native.bench_kv_quant [--json results.json] [--sweep]

Decode attention is a pure read of the cache, so the quantized kernel
(paged_decode_quant) should be faster by about the ratio of bytes read. Each case
(Llama-3-8B attention: 32 query heads, 8 kv heads, head dim 128, blocks of 64) times
paged_attention.paged_decode on bf16 and paged_decode_quant on int8 and int4 as
CUDA-graph replays (bench_kernels.time_ms). Every call of a replay reads other blocks
of one large cache (several copies of the batch), so no call finds the previous one's
bytes in L2. Bytes read are values + params + Q; their rate is set against a
device-to-device copy (read + write) measured in the same run. --sweep also times the int8
and int4 kernels at batch 1 x 32768 for each ring depth and several split counts (the
heuristic's choice is "auto"), and every kernel on a 256-token context: what a launch costs
with almost nothing to stream.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math

import torch

from lmdeploy_sdk.native import paged_attention as native_attention
from lmdeploy_sdk.native.bench_kernels import copy_bandwidth_gbs, time_ms
from lmdeploy_sdk.native.paged_decode_quant import paged_decode_quant
from lmdeploy_sdk.ops.metadata import AttentionMetadata
from lmdeploy_sdk.quant.kv_cache import QuantizedKVCache, quantize

CASES = ((32, 4096), (1, 32768))  # (batch, context)
HQ, HKV, HEAD_DIM, BLOCK = 32, 8, 128, 64
MIN_BYTES = 256 << 20  # the int4 copies of a case together: several times an H200's 60 MB L2
SCALE = HEAD_DIM**-0.5


def metas(batch: int, ctx: int, copies: int) -> tuple[int, list[AttentionMetadata]]:
    """(blocks of the cache, one batch description per copy): copies own disjoint shuffled blocks."""
    per_seq = math.ceil(ctx / BLOCK)
    num_blocks = copies * batch * per_seq
    perm = torch.randperm(num_blocks, device="cuda").to(torch.int32).view(copies, batch, per_seq)
    kv_lens = torch.full((batch,), ctx, device="cuda", dtype=torch.int32)
    out = [
        AttentionMetadata(
            cu_seqlens_q=torch.arange(batch + 1, device="cuda", dtype=torch.int32),
            kv_lens=kv_lens,
            block_tables=perm[c].contiguous(),
            slot_mapping=torch.zeros(batch, device="cuda", dtype=torch.int64),
            q_lens_cpu=[1] * batch,
            kv_lens_cpu=[ctx] * batch,
            max_q_len=1,
            max_kv_len=ctx,
            block_size=BLOCK,
        )
        for c in range(copies)
    ]
    return num_blocks, out


SWEEP_SPLITS = (None, 16, 24, 32, 33, 48, 64, 66, 99)  # None: the heuristic's choice
SWEEP_STAGES = (None, 2, 4, 6)  # None: the kernel choice's depth
FLOOR_CTX = 256


def quant_caches(k: torch.Tensor, v: torch.Tensor) -> dict[str, tuple]:
    """int8 and int4 caches of the same rows (no rotation: the kernel's cost is the same either way)."""
    return {f"int{bits}": tuple(QuantizedKVCache(*quantize(x, bits), bits=bits, rotation=None) for x in (k, v))
            for bits in (8, 4)}


def cache_bytes(cache: str, tokens: int) -> int:
    """Bytes of K and V of `tokens` tokens (every kv head) in a bf16, int8 or int4 cache, scale/zero pairs included."""
    row = {"bf16": HEAD_DIM * 2, "int8": HEAD_DIM + 4, "int4": HEAD_DIM // 2 + 4}[cache]
    return 2 * tokens * HKV * row


def replay_us(attend, descs: list[AttentionMetadata]) -> float:
    """Microseconds a call of attend(desc) takes in graph replays that cycle over the copies."""
    turn = itertools.cycle(descs)
    return 1e3 * time_ms(lambda: attend(next(turn)), iters=2 * len(descs) * (20 // len(descs) + 1))


def random_case(batch: int, ctx: int, min_bytes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """q, K, V (bf16) and the batch descriptions of enough copies to read min_bytes of int4 cache a round."""
    copies = max(1, math.ceil(min_bytes / cache_bytes("int4", batch * ctx)))
    num_blocks, descs = metas(batch, ctx, copies)
    q = torch.randn((batch, HQ, HEAD_DIM), device="cuda", dtype=torch.bfloat16)
    k = torch.randn((num_blocks, BLOCK, HKV, HEAD_DIM), device="cuda", dtype=torch.bfloat16)
    return q, k, torch.randn_like(k), descs


def sweep() -> list[dict]:
    """Quantized decode at batch 1 x 32768 over (ring depth, splits), and each kernel at FLOOR_CTX."""
    rows = []
    for ctx, splits_list, stages_list in ((FLOOR_CTX, (None,), (None,)), (32768, SWEEP_SPLITS, SWEEP_STAGES)):
        q, k, v, descs = random_case(1, ctx, MIN_BYTES)
        us = replay_us(lambda d: native_attention.paged_decode(q, k, v, d, SCALE), descs)
        rows.append({"ctx": ctx, "cache": "bf16", "stages": "auto", "splits": "auto", "us": round(us, 1)})
        for name, (kc, vc) in quant_caches(k, v).items():
            for stages, splits in itertools.product(stages_list, splits_list):
                us = replay_us(
                    lambda d: paged_decode_quant(q, kc, vc, d, SCALE, num_splits=splits, stages=stages), descs)
                rows.append({"ctx": ctx, "cache": name, "stages": stages or "auto", "splits": splits or "auto",
                             "us": round(us, 1)})
        torch.cuda.empty_cache()
    return rows


def bench_case(batch: int, ctx: int, copy_gbs: float) -> list[dict]:
    q, k, v, descs = random_case(batch, ctx, MIN_BYTES)
    caches: dict[str, tuple] = {"bf16": (k, v), **quant_caches(k, v)}
    # K and V of every token and kv head, plus Q
    bytes_read = {name: cache_bytes(name, batch * ctx) + batch * HQ * HEAD_DIM * 2 for name in caches}
    rows, base_us = [], None
    for name, (kc, vc) in caches.items():
        attend = native_attention.paged_decode if name == "bf16" else paged_decode_quant
        us = replay_us(lambda d: attend(q, kc, vc, d, SCALE), descs)
        base_us = base_us or us
        gbs = bytes_read[name] / us / 1e3
        rows.append({
            "case": f"B={batch} ctx={ctx}",
            "cache": name,
            "us": round(us, 1),
            "speedup": round(base_us / us, 2),
            "MB_read": round(bytes_read[name] / 1e6, 1),
            "GBps": round(gbs, 1),
            "pct_of_copy": round(100 * gbs / copy_gbs, 1),
        })
    del caches, k, v
    torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--sweep", action="store_true",
                        help="also time the quantized kernels over ring depths and split counts (batch 1 x 32768)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    torch.manual_seed(0)
    copy_gbs = copy_bandwidth_gbs()
    rows = [r for batch, ctx in CASES for r in bench_case(batch, ctx, copy_gbs)]
    gpu = torch.cuda.get_device_name()
    print(f"{gpu}, Hq={HQ} Hkv={HKV} D={HEAD_DIM} block {BLOCK}; device-to-device copy {copy_gbs:.0f} GB/s (read + write)")
    print()
    print("| case | KV cache | µs | speedup vs bf16 | MB read | GB/s | % of copy |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['cache']} | {r['us']:.1f} | {r['speedup']:.2f}x | {r['MB_read']:.1f} "
              f"| {r['GBps']:.0f} | {r['pct_of_copy']:.1f} |")
    sweep_rows = sweep() if args.sweep else []
    if sweep_rows:
        print()
        print("| context | KV cache | ring stages | splits | µs |")
        print("|---:|---|---|---|---:|")
        for r in sweep_rows:
            print(f"| {r['ctx']} | {r['cache']} | {r['stages']} | {r['splits']} | {r['us']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": gpu, "copy_GBps": round(copy_gbs, 1), "decode": rows, "sweep": sweep_rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
