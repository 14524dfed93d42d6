"""Device, dtype and KV-cache sizing decisions, made once at engine start."""
from __future__ import annotations

import logging

import torch

from lmdeploy_sdk.quant.kv_cache import row_bytes

log = logging.getLogger(__name__)

# Default ceiling of the CPU KV cache when sized as a fraction of free memory.
CPU_CACHE_CAP_BYTES = 2 * 2**30
# max_batch_size=None: concurrent sequences by device. Decode steps read all weights
# whatever the batch, so bigger batches are nearly free until the KV cache runs out
# (then the scheduler admits no more, or preempts). GPUs with this much memory hold the
# KV of ~1000 typical requests of an 8B model: on an H100 80GB the 1000-request bench ran
# 10% faster at 1024 than at 512, with no preemption (docs/performance.md).
LARGE_GPU_BYTES = 64 * 2**30
DEFAULT_MAX_BATCH = {"cpu": 8, "cuda": 256, "large_cuda": 1024}

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_device(requested: str | None) -> torch.device:
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={requested!r} was requested but CUDA is not available here")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def resolve_dtype(requested: str, checkpoint_dtype: torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto': float32 on CPU; on CUDA the checkpoint's half type (bf16 if it was float32)."""
    if requested != "auto":
        return _DTYPES[requested]
    if device.type == "cpu":
        return torch.float32
    if checkpoint_dtype in (torch.float16, torch.bfloat16):
        return checkpoint_dtype
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def default_max_batch_size(device: torch.device) -> int:
    if device.type != "cuda":
        return DEFAULT_MAX_BATCH["cpu"]
    if torch.cuda.get_device_properties(device).total_memory >= LARGE_GPU_BYTES:
        return DEFAULT_MAX_BATCH["large_cuda"]
    return DEFAULT_MAX_BATCH["cuda"]


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read MemAvailable from /proc/meminfo")


def block_bytes(
    num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype, kv_bits: int = 0
) -> int:
    """Bytes of K and V for one block over all layers: in `dtype`, or int8/int4 rows with their
    (scale, zero) when kv_bits is 8 or 4 (quant.kv_cache), so a quantized cache gets more blocks."""
    if kv_bits:
        per_row = row_bytes(head_dim, kv_bits)
    else:
        per_row = head_dim * dtype.itemsize
    return 2 * num_layers * block_size * num_kv_heads * per_row


def num_cache_blocks(
    cache_max_entry_count: float | int,
    per_block: int,
    device: torch.device,
    max_useful_blocks: int,
) -> int:
    """An int is a block count; a float is the fraction of free memory (after weights) to use.

    On CPU the fraction is also capped by what the batch could ever use and by
    CPU_CACHE_CAP_BYTES, so a laptop does not reserve (and zero) most of its RAM;
    pass an int to go beyond that.
    """
    if isinstance(cache_max_entry_count, int):
        return cache_max_entry_count
    budget = int(free_memory_bytes(device) * cache_max_entry_count)
    if device.type == "cpu":
        budget = min(budget, CPU_CACHE_CAP_BYTES)
    blocks = budget // per_block
    if device.type == "cpu":
        blocks = min(blocks, max_useful_blocks)
    if blocks < 1:
        raise RuntimeError(
            f"no room for the KV cache: {budget} bytes available for it "
            f"(cache_max_entry_count={cache_max_entry_count}) but one block needs {per_block}"
        )
    return blocks


def describe_cache(num_blocks: int, block_size: int, per_block: int, kv_bits: int, dtype: torch.dtype) -> str:
    """One line for logs and startup messages: blocks, tokens, element type, bytes."""
    kind = f"int{kv_bits}" if kv_bits else str(dtype).removeprefix("torch.")
    return (f"KV cache: {num_blocks} blocks of {block_size} tokens ({num_blocks * block_size} tokens, {kind}, "
            f"{num_blocks * per_block / 2**30:.2f} GiB)")
