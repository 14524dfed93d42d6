"""Layout facts the kernels rely on, checked on the host before a launch."""
from __future__ import annotations

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)


def vec8_ready(t: torch.Tensor) -> bool:
    """True when every row of 8 elements can be read as one aligned 16-byte vector.

    That needs a contiguous last dim, every other stride a multiple of 8 elements and
    a 16-byte aligned base pointer (true for fresh allocations and most views).
    """
    if t.dim() == 0 or t.stride(-1) != 1 or t.data_ptr() % 16 != 0:
        return False
    return all(s % 8 == 0 for s, n in zip(t.stride()[:-1], t.shape[:-1]) if n > 1)


def as_vec8(t: torch.Tensor) -> torch.Tensor:
    """t itself when vec8_ready, else a fresh contiguous copy (which always is)."""
    return t if vec8_ready(t) else t.clone(memory_format=torch.contiguous_format)


def contiguous_aligned(t: torch.Tensor) -> torch.Tensor:
    """t itself when contiguous with a 16-byte aligned base, else a fresh contiguous copy."""
    if t.is_contiguous() and t.data_ptr() % 16 == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)


def block_shift(block_size: int) -> int:
    """log2(block_size) for a power of two, else -1 (the kernels then divide)."""
    if block_size > 0 and block_size & (block_size - 1) == 0:
        return block_size.bit_length() - 1
    return -1


def int32_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """t as a contiguous int32 tensor on `device` (no copy when it already is one)."""
    return t.to(device=device, dtype=torch.int32).contiguous()
