"""Rotary embedding (NeoX rotate-half) of q and k in one launch of `rope.ptx`, alone or fused
with the KV-cache write."""
from __future__ import annotations

import torch

from lmdeploy_sdk.native import driver, kv_cache, kv_quant
from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES, as_vec8
from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.quant.kv_cache import QuantizedKVCache

ROPE_STORE_KV_MAX_THREADS = 512  # __launch_bounds__ of rope_store_kv_* in rope.cu


def _served(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor) -> bool:
    return (
        q.dim() == 3
        and k.dim() == 3
        and q.dtype in SUPPORTED_DTYPES
        and k.dtype == q.dtype
        and k.device == q.device
        and q.shape[0] == k.shape[0] == positions.numel()
        and q.shape[-1] == k.shape[-1]
        and q.shape[-1] % 2 == 0
        and cos_sin.dim() == 2
        and cos_sin.shape[-1] == q.shape[-1]
        and cos_sin.device == q.device
        and positions.device == q.device
    )


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    # q: [T, Hq, D], k: [T, Hkv, D] (strided views allowed); positions: [T];
    # cos_sin: [max_pos, D] fp32 -> (q_rot [T, Hq, D], k_rot [T, Hkv, D]) contiguous
    if not _served(q, k, positions, cos_sin):
        return reference.apply_rope(q, k, positions, cos_sin)
    if q.stride(-1) != 1:
        q = q.contiguous()
    if k.stride(-1) != 1:
        k = k.contiguous()
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    positions = positions.to(torch.int64).contiguous()
    cos_sin = cos_sin.to(torch.float32).contiguous()
    q_out = torch.empty((num_tokens, num_q_heads, head_dim), dtype=q.dtype, device=q.device)
    k_out = torch.empty((num_tokens, num_kv_heads, head_dim), dtype=k.dtype, device=k.device)
    pairs = (num_q_heads + num_kv_heads) * head_dim // 2
    threads = min(256, (pairs + 31) // 32 * 32)
    driver.launch(
        q.device,
        "rope",
        f"apply_rope_{driver.dtype_suffix(q.dtype)}",
        grid=(num_tokens,),
        block=(threads,),
        args=(
            driver.ptr(q_out),
            driver.ptr(k_out),
            driver.ptr(q),
            driver.ptr(k),
            driver.ptr(positions),
            driver.ptr(cos_sin),
            driver.i32(num_q_heads),
            driver.i32(num_kv_heads),
            driver.i32(head_dim),
            driver.i64(q.stride(0)),
            driver.i64(q.stride(1)),
            driver.i64(k.stride(0)),
            driver.i64(k.stride(1)),
        ),
    )
    return q_out, k_out


def rope_store_kv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    cos_sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> torch.Tensor:
    """Rotate q and k and write k, v into the cache in one launch (one kernel fewer per layer)."""
    # q: [T, Hq, D], k, v: [T, Hkv, D] (strided views allowed); positions, slot_mapping: [T];
    # caches: [num_blocks, block_size, Hkv, D] -> q_rot [T, Hq, D] contiguous
    if isinstance(k_cache, QuantizedKVCache):
        return kv_quant.rope_store_kv(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping)
    if not (
        _served(q, k, positions, cos_sin)
        and kv_cache.served(k, v, k_cache, v_cache)
        and q.shape[-1] % 16 == 0
        and slot_mapping.device == q.device
    ):
        q, k = apply_rope(q, k, positions, cos_sin)
        kv_cache.store_kv(k, v, k_cache, v_cache, slot_mapping)
        return q
    q, k, v = as_vec8(q), as_vec8(k), as_vec8(v)
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    q_out = torch.empty((num_tokens, num_q_heads, head_dim), dtype=q.dtype, device=q.device)
    # One thread per 16-byte work item (8 rotated pairs of q or k, 8 elements of v), so a
    # token's items take one pass: at batch 1 the whole layer's rope is this one CTA, and
    # each further pass would add a round trip to L2.
    items = (num_q_heads + num_kv_heads) * head_dim // 16 + num_kv_heads * head_dim // 8
    threads = min(ROPE_STORE_KV_MAX_THREADS, (items + 31) // 32 * 32)
    driver.launch(
        q.device,
        "rope",
        f"rope_store_kv_{driver.dtype_suffix(q.dtype)}",
        grid=(num_tokens,),
        block=(threads,),
        args=(
            driver.ptr(q_out),
            driver.ptr(k_cache),
            driver.ptr(v_cache),
            driver.ptr(q),
            driver.ptr(k),
            driver.ptr(v),
            driver.ptr(positions.to(torch.int64).contiguous()),
            driver.ptr(slot_mapping.to(torch.int64).contiguous()),
            driver.ptr(cos_sin.to(torch.float32).contiguous()),
            driver.i32(num_q_heads),
            driver.i32(num_kv_heads),
            driver.i32(head_dim),
            driver.i64(q.stride(0)),
            driver.i64(q.stride(1)),
            driver.i64(k.stride(0)),
            driver.i64(k.stride(1)),
            driver.i64(v.stride(0)),
            driver.i64(v.stride(1)),
        ),
    )
    return q_out
