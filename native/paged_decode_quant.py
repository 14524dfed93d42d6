"""Decode attention over an int8/int4 KV cache (quant.kv_cache.QuantizedKVCache), on our kernel.

Decode attention reads the whole cached context once per step and does little arithmetic
on it, so its time is the bytes it reads. An int8 cache holds D + 4 bytes per (token,
kv head) instead of 2 D, an int4 one D / 2 + 4: `paged_attention_decode_quant.ptx`
streams those codes and (scale, zero) params and dequantizes in registers (see the .cu's
header), so the step reads ~1.9x / ~3.6x fewer bytes than paged_attention.paged_decode
on a 16-bit cache. Launch, splits and the reduce follow paged_decode, whose helpers this
reuses. The ground truth is ops.reference.paged_attention on the same QuantizedKVCache.
"""
from __future__ import annotations

import functools

import torch

from lmdeploy_sdk.native import driver
from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES, as_vec8, block_shift, int32_device
from lmdeploy_sdk.native.paged_attention import (
    DECODE_MAX_BATCH,
    DECODE_MIN_SPLIT,
    DECODE_THREADS,
    HEAD_DIMS,
    LOG2E,
    choose_num_splits,
    decode_heads,
    output_like,
    reduce_splits,
    split_partials,
)
from lmdeploy_sdk.ops.metadata import AttentionMetadata
from lmdeploy_sdk.quant.kv_cache import KV_BITS, PARAMS_DTYPE, QuantizedKVCache

MODULE = "paged_attention_decode_quant"
TILE = 64  # keys per smem tile (kQuantTile in the .cu)
WARPS = 4
STAGES = (2, 4, 6)  # depths of the cp.async ring the kernels are built with
HEADS_PER_NTILE = 8  # query heads per n8 column tile; a CTA takes 1 or 2 of them (NH)
IN_FLIGHT_BYTES = 96 << 10  # cache bytes in flight per SM that saturate an H100/H200's memory


def served(q: torch.Tensor, k_cache: QuantizedKVCache, v_cache: QuantizedKVCache) -> bool:
    """True when paged_decode_quant's kernel takes these inputs (else use the reference)."""
    if not (isinstance(k_cache, QuantizedKVCache) and isinstance(v_cache, QuantizedKVCache)):
        return False
    tensors = (k_cache.values, k_cache.params, v_cache.values, v_cache.params)
    return (
        q.dim() == 3
        and q.dtype in SUPPORTED_DTYPES
        and k_cache.bits == v_cache.bits
        and k_cache.bits in KV_BITS
        and k_cache.values.dim() == 4
        and k_cache.values.dtype == v_cache.values.dtype == torch.uint8
        and k_cache.params.dtype == v_cache.params.dtype == PARAMS_DTYPE
        and k_cache.values.shape == v_cache.values.shape
        and k_cache.params.shape == v_cache.params.shape == (*k_cache.values.shape[:3], 2)
        and q.shape[-1] == k_cache.head_dim
        and q.shape[-1] in HEAD_DIMS
        and q.shape[1] % k_cache.values.shape[2] == 0
        and all(t.is_contiguous() and t.data_ptr() % 16 == 0 and t.device == q.device for t in tensors)
    )


def _stage_bytes(head_dim: int, bits: int) -> int:
    """Bytes of one ring stage: K and V codes (rows strided as in the .cu), their (scale, zero)."""
    row = head_dim * bits // 8
    k_stride, v_stride = row, (128 if row == 128 else row + 16)
    return TILE * (k_stride + v_stride) + 2 * TILE * 4


def quant_decode_smem(head_dim: int, bits: int, stages: int) -> int:
    """Dynamic smem bytes of a CTA: the ring, or the epilogue's scratch if larger (as in the .cu)."""
    epilogue = (WARPS * 16 * (head_dim + 4) + 2 * WARPS * 16) * 4
    return max(stages * _stage_bytes(head_dim, bits), epilogue)


@functools.cache
def _kernel_choice(
    device_index: int, sfx: str, head_dim: int, bits: int, nh: int, stages_override: int | None = None
) -> tuple[str, int, int]:
    """(kernel, smem bytes, CTAs per SM). The ring depth: the most CTAs per SM (warps to hide the
    dequantization's latency) among those keeping IN_FLIGHT_BYTES in flight per SM, else the most
    bytes in flight; stages_override (one of STAGES) takes that depth if it fits."""
    per_cta, _ = driver.smem_limits(device_index)
    kernels = driver.device_kernels(device_index)
    options = []
    for stages in STAGES if stages_override is None else (stages_override,):
        smem = quant_decode_smem(head_dim, bits, stages)
        name = f"paged_decode_q{bits}_{sfx}_d{head_dim}_h{nh}_s{stages}"
        per_sm = kernels.max_active_blocks(MODULE, name, DECODE_THREADS, smem) if smem <= per_cta else 0
        if per_sm > 0:
            in_flight = per_sm * (stages - 1) * _stage_bytes(head_dim, bits)
            options.append((in_flight >= IN_FLIGHT_BYTES, per_sm if in_flight >= IN_FLIGHT_BYTES else 0,
                            in_flight, name, smem, per_sm))
    if not options:
        raise driver.NativeKernelError(f"no {MODULE} kernel fits GPU {device_index} (D={head_dim}, int{bits})")
    *_, name, smem, per_sm = max(options)
    return name, smem, per_sm


def paged_decode_quant(
    q: torch.Tensor,
    k_cache: QuantizedKVCache,
    v_cache: QuantizedKVCache,
    meta: AttentionMetadata,
    scale: float,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    stages: int | None = None,
) -> torch.Tensor:
    """Decode attention (q_len == 1 for every sequence) over an int8/int4 paged cache.

    Same contract as paged_attention.paged_decode: num_splits overrides the heuristic;
    out: a contiguous [B, Hq, D] tensor to write into (default: a new one); stages, the
    cp.async ring's depth (one of STAGES), overrides its choice (bench_kv_quant --sweep). The caller
    checks `served` first. Attends over the rows as stored: where the cache has a
    rotation, q comes rotated and the output goes back rotated (native.kv_quant does both).
    """
    # q: [B, Hq, D]; caches: values uint8 [num_blocks, block_size, Hkv, D * bits / 8],
    # params fp16 [num_blocks, block_size, Hkv, 2] -> out: [B, Hq, D]
    q = as_vec8(q)
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads, block_size = k_cache.values.shape[2], k_cache.values.shape[1]
    heads = decode_heads(num_q_heads // num_kv_heads)
    nh = 1 if heads <= HEADS_PER_NTILE else 2
    if num_splits is not None and num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    if stages is not None and stages not in STAGES:
        raise ValueError(f"stages must be one of {STAGES}, got {stages}")
    if batch > DECODE_MAX_BATCH:
        raise ValueError(f"decode attention takes at most {DECODE_MAX_BATCH} sequences a launch, got {batch}")
    sfx = driver.dtype_suffix(q.dtype)
    index = driver.device_index(q.device)
    kernel, shared_mem, per_sm = _kernel_choice(index, sfx, head_dim, k_cache.bits, nh, stages)
    ctas = batch * (num_q_heads // heads)
    if num_splits is None:
        num_splits = 1 if meta.max_kv_len <= DECODE_MIN_SPLIT else (
            choose_num_splits(ctas, meta.max_kv_len, per_sm * driver.sm_count(index)))
    block_tables = int32_device(meta.block_tables, q.device)
    kv_lens = int32_device(meta.kv_lens, q.device)
    out = output_like(out, q)
    part_o, part_ml = split_partials(out, num_splits)
    driver.launch(
        q.device,
        MODULE,
        kernel,
        grid=(num_q_heads // heads, batch, num_splits),  # heads fastest, as paged_decode
        block=(DECODE_THREADS,),
        shared_mem=shared_mem,
        args=(
            driver.ptr(out),
            driver.ptr(part_o),
            driver.ptr(part_ml),
            driver.ptr(q),
            driver.ptr(k_cache.values),
            driver.ptr(k_cache.params),
            driver.ptr(v_cache.values),
            driver.ptr(v_cache.params),
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
    if num_splits > 1:
        reduce_splits(out, part_o, part_ml, kv_lens)
    return out
