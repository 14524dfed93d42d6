"""Random paged-attention batches for the GPU parity tests of lmdeploy_sdk.native."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from lmdeploy_sdk.ops.metadata import AttentionMetadata


@dataclass
class PagedBatch:
    q: torch.Tensor  # [T, Hq, D]
    k_cache: torch.Tensor  # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor
    meta: AttentionMetadata


def make_paged_batch(
    q_lens: list[int],
    kv_lens: list[int],
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    seed: int,
    device: str = "cuda",
) -> PagedBatch:
    """A batch whose block tables are a random permutation of the cache blocks.

    Cache slots no sequence owns (spare blocks, the tail of each last block) hold NaN,
    so a kernel that reads past a sequence's context poisons its output.
    """
    assert all(0 < q <= kv for q, kv in zip(q_lens, kv_lens))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    blocks_per_seq = [math.ceil(kv / block_size) for kv in kv_lens]
    num_blocks = sum(blocks_per_seq) + 3
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    max_blocks = max(blocks_per_seq)
    block_tables = torch.zeros((len(q_lens), max_blocks), dtype=torch.int32)
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=torch.float32)
    v_cache = torch.full(shape, float("nan"), dtype=torch.float32)
    flat_k = k_cache.view(num_blocks * block_size, num_kv_heads, head_dim)
    flat_v = v_cache.view(num_blocks * block_size, num_kv_heads, head_dim)
    slots = []
    used = 0
    for b, (q_len, kv_len) in enumerate(zip(q_lens, kv_lens)):
        blocks = torch.tensor(perm[used : used + blocks_per_seq[b]], dtype=torch.int64)
        used += blocks_per_seq[b]
        block_tables[b, : len(blocks)] = blocks.to(torch.int32)
        pos = torch.arange(kv_len)
        seq_slots = blocks[pos // block_size] * block_size + pos % block_size  # [kv_len]
        flat_k[seq_slots] = torch.randn((kv_len, num_kv_heads, head_dim), generator=gen)
        flat_v[seq_slots] = torch.randn((kv_len, num_kv_heads, head_dim), generator=gen)
        slots += seq_slots[kv_len - q_len :].tolist()
    q = torch.randn((sum(q_lens), num_q_heads, head_dim), generator=gen)
    cu = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0).tolist()), dtype=torch.int32)
    meta = AttentionMetadata(
        cu_seqlens_q=cu.to(device),
        kv_lens=torch.tensor(kv_lens, dtype=torch.int32, device=device),
        block_tables=block_tables.to(device),
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        q_lens_cpu=list(q_lens),
        kv_lens_cpu=list(kv_lens),
        max_q_len=max(q_lens),
        max_kv_len=max(kv_lens),
        block_size=block_size,
    )
    return PagedBatch(
        q=q.to(device=device, dtype=dtype),
        k_cache=k_cache.to(device=device, dtype=dtype),
        v_cache=v_cache.to(device=device, dtype=dtype),
        meta=meta,
    )


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere gives inf."""
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm()).item()


def poison_allocator(device: str = "cuda", nbytes: int = 64 << 20) -> None:
    """Fill freed allocator memory with NaN so outputs the kernel forgets to write show up."""
    junk = torch.full((nbytes // 4,), float("nan"), dtype=torch.float32, device=device)
    del junk


@contextlib.contextmanager
def recorded_launches():
    """Names of the kernels launched inside the block (they still run), so a wrapper that
    silently fell back to torch fails its test."""
    import pytest

    from lmdeploy_sdk.native import driver

    names: list[str] = []
    real = driver.launch
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(driver, "launch", lambda *a, **kw: (names.append(a[2]), real(*a, **kw))[1])
        yield names
