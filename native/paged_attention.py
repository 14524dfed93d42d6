"""Paged attention on our kernels: decode (split-K + reduce) and prefill, both on tensor cores.

A pure decode batch (every q_len == 1) runs `paged_attention_decode.ptx`; anything
else (prefill, chunked prefill, a later turn on a cached prefix) runs
`paged_attention_prefill.ptx`. A mixed batch (decodes first, then prefills) runs
each part on its own kernel: the prefill kernel would give every one-token row a
whole query tile and read its context once per query head instead of once per
kv head. Both follow lmdeploy_sdk.ops.reference.paged_attention.
"""
from __future__ import annotations

import math

import torch

from lmdeploy_sdk.native import driver, kv_quant
from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES, as_vec8, block_shift, int32_device
from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.ops.metadata import AttentionMetadata
from lmdeploy_sdk.quant.kv_cache import QuantizedKVCache

HEAD_DIMS = (64, 128)
DECODE_MODULE = "paged_attention_decode"
DECODE_THREADS = 128
DECODE_MAX_HEADS = 16  # query heads per CTA: the rows of one m16 tile
DECODE_TILE = 64  # keys per smem tile (kDecodeTile in the .cu)
DECODE_STAGES = (2, 3)  # depths of the cp.async K/V ring the kernel is built with
DECODE_MIN_SPLIT = 64  # a split covers at least this many tokens (kDecodeMinSplit)
DECODE_MAX_BATCH = 65535  # sequences of one decode launch: they are its grid's y dimension
# Prefill CTA tiles by head dim, as instantiated in paged_attention_prefill.cu:
# (warps, query rows per CTA = 32 per warp, keys per smem tile).
PREFILL_TILES = {64: (4, 128, 128), 128: (4, 128, 64)}
SMEM_ROW_PAD = 8  # elements of padding per smem row, both kernels (kStride = D + 8 in the .cu)
# The wgmma prefill, run instead on compute capability 9.0 (H100, H200) unless
# LMDEPLOY_SDK_DISABLE_WGMMA=1. Tiles by head dim, as instantiated at the bottom of
# paged_attention_prefill_sm90a.cu (keep in step): (query rows per CTA = 64 per warpgroup,
# keys per smem tile, stages of the K/V ring). CTAs are 2 warpgroups.
WGMMA_PREFILL_MODULE = "paged_attention_prefill_sm90a"
WGMMA_PREFILL_THREADS = 256
WGMMA_PREFILL_TILES = {64: (128, 64, 4), 128: (128, 128, 3)}
WGMMA_SMEM_SLACK = 1024  # the kernel rounds its smem base up to 1024 bytes (swizzle atoms)
# Batches whose longest new run fits one query tile (fewer tokens than this) stay on the
# mma.sync kernel: with one query tile and one K/V tile a CTA, its two CTAs per SM hide
# each other's loads and the wgmma kernel's one cannot (64 prompts of 128 tokens on an
# H200; `bench_kernels --only prefill` times both, docs/performance.md).
WGMMA_MIN_Q_LEN = 129
PREFILL_KERNELS = ("wgmma", "mma_sync")  # paged_prefill(kernel=...) overrides
LOG2E = 1.4426950408889634


def _served(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> bool:
    return (
        q.dim() == 3
        and k_cache.dim() == 4
        and q.dtype in SUPPORTED_DTYPES
        and k_cache.dtype == v_cache.dtype == q.dtype
        and v_cache.shape == k_cache.shape
        and q.shape[-1] == k_cache.shape[-1]
        and q.shape[-1] in HEAD_DIMS
        and q.shape[1] % k_cache.shape[2] == 0
        and k_cache.is_contiguous()
        and v_cache.is_contiguous()
        and k_cache.data_ptr() % 16 == 0
        and v_cache.data_ptr() % 16 == 0
        and q.device == k_cache.device == v_cache.device
    )


def decode_heads(group: int) -> int:
    """Query heads per decode CTA for `group` query heads per kv head.

    A CTA serves the largest divisor of the group that fits an m16 tile (16 rows), so
    every kv row it reads is shared by as many heads as it can.
    """
    return max(d for d in range(1, min(group, DECODE_MAX_HEADS) + 1) if group % d == 0)


def decode_smem(head_dim: int, element_size: int, stages: int) -> int:
    """Dynamic smem bytes of a decode CTA: the Q tile and the K/V ring, rows padded as in the .cu."""
    row = (head_dim + SMEM_ROW_PAD) * element_size
    return (DECODE_MAX_HEADS + stages * 2 * DECODE_TILE) * row


def decode_stages(head_dim: int, element_size: int, smem_per_cta: int, smem_per_sm: int) -> int:
    """The deepest ring with which two decode CTAs fit an SM's shared memory (H100/H200:
    3 at D = 128; A100: 2), else 2 (a 4090-class GPU can't give a 3-stage CTA enough)."""
    for stages in sorted(DECODE_STAGES, reverse=True):
        smem = decode_smem(head_dim, element_size, stages)
        if smem <= smem_per_cta and 2 * (smem + 1024) <= smem_per_sm:  # + the 1 KiB the CUDA runtime reserves per CTA
            return stages
    return min(DECODE_STAGES)


def choose_num_splits(num_ctas: int, max_kv_len: int, resident_ctas: int) -> int:
    """Context splits per sequence for a decode launch of `num_ctas` CTAs per split.

    Every CTA of a split does about the same work, so a grid that leaves the last
    wave of the GPU's `resident_ctas` slots half empty wastes that half. Take the
    fewest splits whose wave efficiency is within 5% of the best one, never making
    a split shorter than DECODE_MIN_SPLIT tokens.
    """
    max_splits = max(1, math.ceil(max_kv_len / DECODE_MIN_SPLIT))
    resident_ctas = max(resident_ctas, 1)

    def efficiency(splits: int) -> float:
        ctas = num_ctas * splits
        return ctas / (math.ceil(ctas / resident_ctas) * resident_ctas)

    best = max(efficiency(s) for s in range(1, max_splits + 1))
    return next(s for s in range(1, max_splits + 1) if efficiency(s) >= 0.95 * best)


def output_like(out: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
    """`out` checked against q's shape, or a new [T, Hq, D] tensor like q."""
    if out is None:
        return torch.empty(q.shape, dtype=q.dtype, device=q.device)
    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous() and out.data_ptr() % 16 == 0
    return out


def _common_args(q: torch.Tensor, k_cache: torch.Tensor, meta: AttentionMetadata):
    block_tables = int32_device(meta.block_tables, q.device)
    kv_lens = int32_device(meta.kv_lens, q.device)
    return block_tables, kv_lens, k_cache.shape[1]


def paged_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode attention (q_len == 1 for every sequence); num_splits overrides the heuristic.

    out: a contiguous [B, Hq, D] tensor to write into (default: a new one).
    """
    # q: [B, Hq, D]; caches: [num_blocks, block_size, Hkv, D] -> out: [B, Hq, D]
    q = as_vec8(q)
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    heads = decode_heads(num_q_heads // num_kv_heads)
    block_tables, kv_lens, block_size = _common_args(q, k_cache, meta)
    sfx = driver.dtype_suffix(q.dtype)
    index = driver.device_index(q.device)
    stages = decode_stages(head_dim, q.element_size(), *driver.smem_limits(index))
    kernel = f"paged_decode_{sfx}_d{head_dim}_s{stages}"
    shared_mem = decode_smem(head_dim, q.element_size(), stages)
    ctas = batch * (num_q_heads // heads)
    if num_splits is not None and num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    if batch > DECODE_MAX_BATCH:
        raise ValueError(f"decode attention takes at most {DECODE_MAX_BATCH} sequences a launch, got {batch}")
    if num_splits is None and meta.max_kv_len <= DECODE_MIN_SPLIT:
        num_splits = 1
    elif num_splits is None:
        per_sm = driver.device_kernels(index).max_active_blocks(DECODE_MODULE, kernel, DECODE_THREADS, shared_mem)
        num_splits = choose_num_splits(ctas, meta.max_kv_len, per_sm * driver.sm_count(index))
    splits = num_splits
    out = output_like(out, q)
    part_o, part_ml = split_partials(out, splits)
    driver.launch(
        q.device,
        DECODE_MODULE,
        kernel,
        grid=(num_q_heads // heads, batch, splits),  # heads fastest: see the .cu's header
        block=(DECODE_THREADS,),
        shared_mem=shared_mem,
        args=(
            driver.ptr(out),
            driver.ptr(part_o),
            driver.ptr(part_ml),
            driver.ptr(q),
            driver.ptr(k_cache),
            driver.ptr(v_cache),
            driver.ptr(kv_lens),
            driver.ptr(block_tables),
            driver.i32(block_tables.stride(0)),
            driver.i64(q.stride(0)),
            driver.i64(q.stride(1)),
            driver.i32(num_q_heads),
            driver.i32(num_kv_heads),
            driver.i32(heads),
            driver.i32(block_size),
            driver.i32(block_shift(block_size)),
            driver.f32(scale * LOG2E),
        ),
    )
    if splits > 1:
        reduce_splits(out, part_o, part_ml, kv_lens)
    return out


def split_partials(out: torch.Tensor, splits: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The fp32 partial outputs and (max, sum) a decode launch of `splits` splits per sequence
    writes for reduce_splits; (None, None) for one split (the kernel then writes `out`)."""
    # out: [B, Hq, D] -> part_o [B, Hq, S, D], part_ml [B, Hq, S, 2]
    if splits == 1:
        return None, None
    batch, num_q_heads, head_dim = out.shape
    part_o = torch.empty((batch, num_q_heads, splits, head_dim), dtype=torch.float32, device=out.device)
    part_ml = torch.empty((batch, num_q_heads, splits, 2), dtype=torch.float32, device=out.device)
    return part_o, part_ml


def reduce_splits(out: torch.Tensor, part_o: torch.Tensor, part_ml: torch.Tensor, kv_lens: torch.Tensor) -> None:
    """Merge a decode launch's splits into out (paged_decode_reduce; the 16-bit and the int8/int4
    decode kernels split contexts alike, decode_split.cuh)."""
    # out: [B, Hq, D]; part_o: [B, Hq, S, D]; part_ml: [B, Hq, S, 2]; kv_lens: int32 [B]
    batch, num_q_heads, head_dim = out.shape
    driver.launch(
        out.device,
        DECODE_MODULE,
        f"paged_decode_reduce_{driver.dtype_suffix(out.dtype)}_d{head_dim}",
        grid=(batch * num_q_heads,),
        block=(head_dim,),
        args=(
            driver.ptr(out),
            driver.ptr(part_o),
            driver.ptr(part_ml),
            driver.ptr(kv_lens),
            driver.i32(num_q_heads),
            driver.i32(part_o.shape[2]),
        ),
    )


def wgmma_prefill_smem(head_dim: int, element_size: int) -> int:
    """Dynamic smem bytes of a wgmma prefill CTA: the Q tile and the K/V ring, plus alignment slack."""
    tile_m, tile_n, stages = WGMMA_PREFILL_TILES[head_dim]
    return WGMMA_SMEM_SLACK + (tile_m + 2 * stages * tile_n) * head_dim * element_size


def _prefill_on_wgmma(kernel: str | None, head_dim: int, max_q_len: int, device_index: int) -> bool:
    """Whether paged_prefill runs the wgmma kernel: as `kernel` asks, else by the rule above."""
    if kernel is not None and kernel not in PREFILL_KERNELS:
        raise ValueError(f"kernel must be one of {PREFILL_KERNELS} or None, got {kernel!r}")
    if kernel == "mma_sync":
        return False
    if kernel == "wgmma":
        if head_dim not in WGMMA_PREFILL_TILES or not driver.device_runs_sm90a(device_index):
            raise ValueError(
                f"the wgmma prefill needs compute capability 9.0 and head dim in {sorted(WGMMA_PREFILL_TILES)}"
                f" (GPU {device_index}: {driver.device_capability(device_index)}, head dim {head_dim})"
            )
        return True
    return (
        head_dim in WGMMA_PREFILL_TILES
        and max_q_len >= WGMMA_MIN_Q_LEN
        and driver.device_uses_sm90a(device_index)
    )


def paged_prefill(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    out: torch.Tensor | None = None,
    kernel: str | None = None,
) -> torch.Tensor:
    """Causal attention of any number of new tokens per sequence over its cached context.

    out: a contiguous [T, Hq, D] tensor to write into (default: a new one).
    kernel: "wgmma" or "mma_sync" to run that one (benchmarks, tests); None picks wgmma on
    compute capability 9.0 for runs longer than one query tile (see WGMMA_MIN_Q_LEN).
    """
    # q: [T, Hq, D]; caches: [num_blocks, block_size, Hkv, D] -> out: [T, Hq, D]
    q = as_vec8(q)
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    block_tables, kv_lens, block_size = _common_args(q, k_cache, meta)
    cu_seqlens_q = int32_device(meta.cu_seqlens_q, q.device)
    out = output_like(out, q)
    sfx = driver.dtype_suffix(q.dtype)
    if _prefill_on_wgmma(kernel, head_dim, meta.max_q_len, driver.device_index(q.device)):
        module, name = WGMMA_PREFILL_MODULE, f"paged_prefill_wgmma_{sfx}_d{head_dim}"
        tile_m, threads = WGMMA_PREFILL_TILES[head_dim][0], WGMMA_PREFILL_THREADS
        shared_mem = wgmma_prefill_smem(head_dim, q.element_size())
    else:
        module, name = "paged_attention_prefill", f"paged_prefill_{sfx}_d{head_dim}"
        warps, tile_m, tile_n = PREFILL_TILES[head_dim]
        threads = 32 * warps
        # dynamic smem: the Q tile, one K tile and one V tile of padded rows
        shared_mem = (tile_m + 2 * tile_n) * (head_dim + SMEM_ROW_PAD) * q.element_size()
    q_tiles = math.ceil(meta.max_q_len / tile_m)
    driver.launch(
        q.device,
        module,
        name,
        grid=(q_tiles, num_q_heads, meta.num_seqs),
        block=(threads,),
        shared_mem=shared_mem,
        args=(
            driver.ptr(out),
            driver.ptr(q),
            driver.ptr(k_cache),
            driver.ptr(v_cache),
            driver.ptr(cu_seqlens_q),
            driver.ptr(kv_lens),
            driver.ptr(block_tables),
            driver.i32(block_tables.stride(0)),
            driver.i64(q.stride(0)),
            driver.i64(q.stride(1)),
            driver.i32(num_q_heads),
            driver.i32(num_kv_heads),
            driver.i32(block_size),
            driver.i32(block_shift(block_size)),
            driver.f32(scale * LOG2E),
        ),
    )
    return out


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    # q: [T, Hq, D] -> out: [T, Hq, D]
    if isinstance(k_cache, QuantizedKVCache):
        return kv_quant.paged_attention(q, k_cache, v_cache, meta, scale)
    if not _served(q, k_cache, v_cache) or meta.num_seqs == 0:
        return reference.paged_attention(q, k_cache, v_cache, meta, scale)
    if meta.is_decode and q.shape[0] == meta.num_seqs:
        return paged_decode(q, k_cache, v_cache, meta, scale)
    split = meta.decode_prefill_split
    if split is None:
        return paged_prefill(q, k_cache, v_cache, meta, scale)
    decode, prefill = split
    d = decode.num_seqs  # one query row each, the first d rows of q
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    paged_decode(q[:d], k_cache, v_cache, decode, scale, out=out[:d])
    paged_prefill(q[d:], k_cache, v_cache, prefill, scale, out=out[d:])
    return out
