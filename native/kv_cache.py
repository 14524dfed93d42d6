"""Paged KV-cache write (`kv_cache.ptx`): new tokens' K and V into their cache slots."""
from __future__ import annotations

import torch

from lmdeploy_sdk.native import driver, kv_quant
from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES, as_vec8
from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.quant.kv_cache import QuantizedKVCache


def served(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> bool:
    """True when the store_kv kernel takes these tensors (else the reference runs)."""
    return (
        k_cache.dtype in SUPPORTED_DTYPES
        and k.dtype == v.dtype == k_cache.dtype == v_cache.dtype
        and k.dim() == 3
        and v.shape == k.shape
        and k_cache.dim() == 4
        and v_cache.shape == k_cache.shape
        and k.shape[1:] == k_cache.shape[2:]
        and k.shape[-1] % 8 == 0
        and k_cache.is_contiguous()
        and v_cache.is_contiguous()
        and k_cache.data_ptr() % 16 == 0
        and v_cache.data_ptr() % 16 == 0
        and k.device == v.device == k_cache.device == v_cache.device
    )


def store_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    # k, v: [T, Hkv, D] (strided views allowed); caches: [num_blocks, block_size, Hkv, D];
    # slot_mapping: [T] (negative slots are skipped)
    if isinstance(k_cache, QuantizedKVCache):
        kv_quant.store_kv(k, v, k_cache, v_cache, slot_mapping)
        return
    if not served(k, v, k_cache, v_cache):
        reference.store_kv(k, v, k_cache, v_cache, slot_mapping)
        return
    k, v = as_vec8(k), as_vec8(v)
    slots = slot_mapping.to(device=k.device, dtype=torch.int64).contiguous()
    num_tokens, num_kv_heads, head_dim = k.shape
    vecs = num_kv_heads * head_dim // 8
    threads = min(128, (vecs + 31) // 32 * 32)
    driver.launch(
        k.device,
        "kv_cache",
        f"store_kv_{driver.dtype_suffix(k.dtype)}",
        grid=(num_tokens,),
        block=(threads,),
        args=(
            driver.ptr(k_cache),
            driver.ptr(v_cache),
            driver.ptr(k),
            driver.ptr(v),
            driver.ptr(slots),
            driver.i32(num_kv_heads),
            driver.i32(head_dim),
            driver.i64(k.stride(0)),
            driver.i64(k.stride(1)),
            driver.i64(v.stride(0)),
            driver.i64(v.stride(1)),
        ),
    )
