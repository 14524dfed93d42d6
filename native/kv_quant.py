"""The int8/int4 KV cache on our kernels (`kv_quant.ptx`): the quantizing cache write (alone
or fused with rope) and attention over the quantized cache.

Decode attention dequantizes in registers (paged_decode_quant: it reads a half or a quarter
of a 16-bit cache's bytes, which is what makes it faster). Prefill is compute-bound: its
sequences' blocks are dequantized to a 16-bit scratch copy by one kernel and the 16-bit
prefill kernel runs on that. Follows lmdeploy_sdk.ops.reference with QuantizedKVCache caches.
"""
from __future__ import annotations

import torch

from lmdeploy_sdk.native import driver
from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES
from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.ops.metadata import AttentionMetadata
from lmdeploy_sdk.quant.kv_cache import QuantizedKVCache

MODULE = "kv_quant"
KV_QUANT_HEAD_DIMS = (64, 128)  # as instantiated at the bottom of kv_quant.cu
STORE_MAX_THREADS = 512  # __launch_bounds__ of rope_store_kv_q*
DEQUANT_THREADS = 256


def _caches_served(k_cache: QuantizedKVCache, v_cache: QuantizedKVCache, device: torch.device) -> bool:
    return (
        k_cache.head_dim in KV_QUANT_HEAD_DIMS
        and k_cache.rotation is not None  # the store kernel always rotates
        and k_cache.bits == v_cache.bits
        and k_cache.shape == v_cache.shape
        and k_cache.device == v_cache.device == device
        and all(t.is_contiguous() and t.data_ptr() % 16 == 0
                for c in (k_cache, v_cache) for t in (c.values, c.params))
    )


def _rows_served(x: torch.Tensor, head_dim: int) -> bool:
    return x.dim() == 3 and x.dtype in SUPPORTED_DTYPES and x.shape[-1] == head_dim and x.stride(-1) == 1


def rope_store_kv(
    q: torch.Tensor | None,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor | None,
    cos_sin: torch.Tensor | None,
    k_cache: QuantizedKVCache,
    v_cache: QuantizedKVCache,
    slot_mapping: torch.Tensor,
) -> torch.Tensor | None:
    """reference.rope_store_kv (or, with q, positions and cos_sin None, store_kv) into an
    int8/int4 cache in one launch; returns q after rope and the cache's rotation (None without q)."""
    # q: [T, Hq, D], k, v: [T, Hkv, D] (strided views allowed); caches [num_blocks, block_size, Hkv, D]
    rope = q is not None
    d = k_cache.head_dim
    served = (
        _caches_served(k_cache, v_cache, k.device)
        and _rows_served(k, d)
        and _rows_served(v, d)
        and v.shape == k.shape
        and v.dtype == k.dtype
        and k.shape[1] == k_cache.shape[2]
        and slot_mapping.device == k.device
        and (not rope or (_rows_served(q, d) and q.dtype == k.dtype and positions.device == k.device
                          and cos_sin.dim() == 2 and cos_sin.shape[1] == d and cos_sin.device == k.device))
    )
    if not served:
        if rope:
            return reference.rope_store_kv(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping)
        reference.store_kv(k, v, k_cache, v_cache, slot_mapping)
        return None
    num_tokens, num_kv_heads, head_dim = k.shape
    num_q_heads = q.shape[1] if rope else 0
    q_out = torch.empty((num_tokens, num_q_heads, head_dim), dtype=k.dtype, device=k.device) if rope else None
    warps = min(STORE_MAX_THREADS // 32, num_q_heads + 2 * num_kv_heads)
    sfx = driver.dtype_suffix(k.dtype)
    driver.launch(
        k.device,
        MODULE,
        f"rope_store_kv_q{k_cache.bits}_{sfx}_d{head_dim}",
        grid=(num_tokens,),
        block=(32 * warps,),
        args=(
            driver.ptr(q_out),
            driver.ptr(k_cache.values),
            driver.ptr(k_cache.params),
            driver.ptr(v_cache.values),
            driver.ptr(v_cache.params),
            driver.ptr(q),
            driver.ptr(k),
            driver.ptr(v),
            driver.ptr(positions.to(torch.int64).contiguous() if rope else None),
            driver.ptr(slot_mapping.to(device=k.device, dtype=torch.int64).contiguous()),
            driver.ptr(cos_sin.to(torch.float32).contiguous() if rope else None),
            driver.i32(num_q_heads),
            driver.i32(num_kv_heads),
            driver.i64(q.stride(0) if rope else 0),
            driver.i64(q.stride(1) if rope else 0),
            driver.i64(k.stride(0)),
            driver.i64(k.stride(1)),
            driver.i64(v.stride(0)),
            driver.i64(v.stride(1)),
        ),
    )
    return q_out


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: QuantizedKVCache, v_cache: QuantizedKVCache,
    slot_mapping: torch.Tensor,
) -> None:
    rope_store_kv(None, k, v, None, None, k_cache, v_cache, slot_mapping)


def dequantized_blocks(cache: QuantizedKVCache, src_blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Blocks src_blocks of `cache` as a 16-bit paged cache of len(src_blocks) blocks."""
    # src_blocks: int32 [n] -> [n, block_size, Hkv, D] in dtype
    _, block_size, num_kv_heads, head_dim = cache.shape
    out = torch.empty((src_blocks.numel(), block_size, num_kv_heads, head_dim), dtype=dtype, device=cache.device)
    if src_blocks.numel():
        driver.launch(
            cache.device,
            MODULE,
            f"dequant_kv_blocks_q{cache.bits}_{driver.dtype_suffix(dtype)}_d{head_dim}",
            grid=(src_blocks.numel(),),
            block=(DEQUANT_THREADS,),
            args=(
                driver.ptr(out),
                driver.ptr(cache.values),
                driver.ptr(cache.params),
                driver.ptr(src_blocks),
                driver.i32(block_size * num_kv_heads),
            ),
        )
    return out


def dequantized_view(
    k_cache: QuantizedKVCache, v_cache: QuantizedKVCache, meta: AttentionMetadata, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
    """The batch's context as 16-bit caches holding just its sequences' blocks, and the
    metadata that addresses them (meta.packed_blocks)."""
    src, packed = meta.packed_blocks
    return dequantized_blocks(k_cache, src, dtype), dequantized_blocks(v_cache, src, dtype), packed


def paged_attention(
    q: torch.Tensor, k_cache: QuantizedKVCache, v_cache: QuantizedKVCache, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """reference.paged_attention over an int8/int4 cache (q in the stored rows' basis, as
    rope_store_kv returns it): decode rows on the quantized decode kernel, prefill rows on the
    16-bit prefill kernel over a dequantized copy, then the output rotated back (one GEMM)."""
    # q: [T, Hq, D] -> [T, Hq, D]
    if not (_caches_served(k_cache, v_cache, q.device) and q.dtype in SUPPORTED_DTYPES) or meta.num_seqs == 0:
        return reference.paged_attention(q, k_cache, v_cache, meta, scale)
    return k_cache.rotate_fast(_rotated_attention(q, k_cache, v_cache, meta, scale))


def _rotated_attention(
    q: torch.Tensor, k_cache: QuantizedKVCache, v_cache: QuantizedKVCache, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    # q: [T, Hq, D], in the cache rows' basis -> [T, Hq, D], still in it
    from lmdeploy_sdk.native import paged_attention as attention
    from lmdeploy_sdk.native import paged_decode_quant as decoder

    decode_served = decoder.served(q, k_cache, v_cache)
    if meta.is_decode and q.shape[0] == meta.num_seqs and decode_served:
        return decoder.paged_decode_quant(q, k_cache, v_cache, meta, scale)
    split = meta.decode_prefill_split
    if split is None or not decode_served:
        k, v, view = dequantized_view(k_cache, v_cache, meta, q.dtype)
        return attention.paged_attention(q, k, v, view, scale)
    decode, prefill = split
    d = decode.num_seqs  # one query row each, the first d rows of q
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    decoder.paged_decode_quant(q[:d], k_cache, v_cache, decode, scale, out=out[:d])
    k, v, view = dequantized_view(k_cache, v_cache, prefill, q.dtype)
    attention.paged_prefill(q[d:], k, v, view, scale, out=out[d:])
    return out
