"""Paged attention kernels (decode with split-K, tensor-core prefill) vs the reference."""
from __future__ import annotations

import pytest
import torch

from lmdeploy_sdk import ops
from lmdeploy_sdk.native import paged_attention as native_attention
from lmdeploy_sdk.ops import reference
from native_attention_cases import make_paged_batch, poison_allocator, relative_error

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16]
# heads (Hq, Hkv): GQA ratios 1, 2, 4, 8, groups that fill part of the decode kernel's
# 16-row tile (3, 7) or all of it (16), and one split over two CTAs (32 -> 2 x 16)
HEADS = [(8, 8), (16, 8), (16, 4), (32, 4), (12, 4), (28, 4), (32, 2), (64, 2)]
TOLERANCE = {torch.float16: 3e-3, torch.bfloat16: 1.5e-2}


def _check(batch, scale: float, out: torch.Tensor) -> None:
    ref = reference.paged_attention(
        batch.q.float(), batch.k_cache.float(), batch.v_cache.float(), batch.meta, scale
    )
    assert out.shape == batch.q.shape and out.dtype == batch.q.dtype
    err = relative_error(out, ref)
    assert err < TOLERANCE[batch.q.dtype], f"relative error {err}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("block_size", [16, 64, 24])
def test_decode_ragged_batch(dtype, head_dim, heads, block_size):
    kv_lens = [1, 15, 16, 17, 64, 65, 300, 1030]
    batch = make_paged_batch([1] * len(kv_lens), kv_lens, *heads, head_dim, block_size, dtype, seed=block_size)
    scale = head_dim**-0.5
    poison_allocator()
    _check(batch, scale, ops.paged_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, scale))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [(32, 8), (8, 1)])
@pytest.mark.parametrize("num_splits", [None, 1, 3, 8, 64])
def test_decode_long_context_splits(dtype, heads, num_splits):
    kv_lens = [4096, 16384, 9001, 700]
    batch = make_paged_batch([1] * 4, kv_lens, *heads, 128, 64, dtype, seed=7)
    poison_allocator()
    out = native_attention.paged_decode(
        batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.088, num_splits=num_splits
    )
    _check(batch, 0.088, out)


def test_decode_many_sequences():
    """Hundreds of sequences: the grid's sequence dimension (y) far larger than its heads (x)."""
    gen = torch.Generator().manual_seed(5)
    kv_lens = torch.randint(1, 200, (600,), generator=gen).tolist()
    batch = make_paged_batch([1] * len(kv_lens), kv_lens, 32, 8, 128, 16, torch.bfloat16, seed=5)
    poison_allocator()
    _check(batch, 0.088, native_attention.paged_decode(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.088))


def test_decode_rejects_more_sequences_than_one_launch_holds(monkeypatch):
    monkeypatch.setattr(native_attention, "DECODE_MAX_BATCH", 4)
    batch = make_paged_batch([1] * 5, [3] * 5, 8, 8, 64, 16, torch.bfloat16, seed=1)
    with pytest.raises(ValueError, match="at most 4 sequences a launch, got 5"):
        native_attention.paged_decode(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.1)


def test_decode_strided_query():
    # q as the query slice of a fused qkv projection: [B, (Hq + 2 Hkv) * D]
    batch = make_paged_batch([1] * 3, [33, 500, 2000], 16, 4, 128, 32, torch.bfloat16, seed=3)
    qkv = torch.randn((3, (16 + 8) * 128), device="cuda", dtype=torch.bfloat16)
    q = qkv[:, : 16 * 128].view(3, 16, 128)
    q.copy_(batch.q)
    batch.q = q
    _check(batch, 0.1, ops.paged_attention(q, batch.k_cache, batch.v_cache, batch.meta, 0.1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("heads", [(8, 8), (16, 4), (32, 4)])
@pytest.mark.parametrize(
    "q_lens, kv_lens",
    [
        ([1, 7, 64, 65, 200], [1, 7, 64, 65, 200]),  # fresh prefill, tile edges
        ([5, 64, 100, 130], [300, 764, 1000, 130]),  # cached prefix (later turn, chunked prefill)
        ([1, 33, 1, 2], [50, 33, 2000, 90]),  # decodes mixed with prefill
    ],
)
def test_prefill(dtype, head_dim, heads, q_lens, kv_lens):
    batch = make_paged_batch(q_lens, kv_lens, *heads, head_dim, 16, dtype, seed=len(q_lens))
    scale = head_dim**-0.5
    poison_allocator()
    _check(batch, scale, ops.paged_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, scale))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "q_lens, kv_lens",
    [
        ([1, 1, 1, 40, 3], [50, 2000, 700, 40, 90]),  # a step of decodes plus new prompts
        ([1, 1, 5, 1], [17, 4100, 5, 64]),  # one-token rows after the first prefill stay in its half
    ],
)
def test_mixed_batch_runs_decodes_on_the_decode_kernel(dtype, q_lens, kv_lens, monkeypatch):
    batch = make_paged_batch(q_lens, kv_lens, 32, 8, 128, 64, dtype, seed=sum(q_lens))
    calls = []
    decode = native_attention.paged_decode
    monkeypatch.setattr(native_attention, "paged_decode",
                        lambda q, *a, **kw: calls.append(q.shape[0]) or decode(q, *a, **kw))
    poison_allocator()
    _check(batch, 0.088, ops.paged_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.088))
    assert calls == [q_lens.index(next(q for q in q_lens if q > 1))]


@pytest.mark.parametrize("dtype", DTYPES)
def test_prefill_long_context(dtype):
    batch = make_paged_batch([1024, 3000], [4096, 3000], 32, 8, 128, 64, dtype, seed=11)
    poison_allocator()
    _check(batch, 0.088, ops.paged_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.088))


def test_prefill_non_power_of_two_blocks_and_strided_query():
    batch = make_paged_batch([40, 77], [100, 77], 16, 4, 64, 48, torch.float16, seed=5)
    qkv = torch.randn((117, (16 + 8) * 64), device="cuda", dtype=torch.float16)
    q = qkv[:, : 16 * 64].view(117, 16, 64)
    q.copy_(batch.q)
    batch.q = q
    _check(batch, 0.125, ops.paged_attention(q, batch.k_cache, batch.v_cache, batch.meta, 0.125))


def test_unsupported_head_dim_falls_back_to_reference():
    batch = make_paged_batch([1, 3], [10, 3], 4, 2, 96, 16, torch.bfloat16, seed=2)
    out = ops.paged_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.1)
    ref = reference.paged_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.1)
    torch.testing.assert_close(out, ref)


def test_decode_under_cuda_graph_replay():
    """Captured once at the longest context, replays stay right as contexts change."""
    batch = make_paged_batch([1] * 4, [5000, 3000, 100, 4000], 32, 8, 128, 64, torch.bfloat16, seed=9)
    static_q = batch.q.clone()
    scale = 0.088
    native_attention.paged_decode(static_q, batch.k_cache, batch.v_cache, batch.meta, scale, num_splits=8)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = native_attention.paged_decode(
            static_q, batch.k_cache, batch.v_cache, batch.meta, scale, num_splits=8
        )
    batch.meta.kv_lens.copy_(torch.tensor([4000, 17, 100, 2500], dtype=torch.int32))
    batch.meta.kv_lens_cpu = [4000, 17, 100, 2500]
    static_q.copy_(torch.randn_like(static_q))
    batch.q = static_q
    graph.replay()
    _check(batch, scale, static_out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("num_splits", [None, 5])
def test_decode_two_stage_ring(dtype, head_dim, num_splits, monkeypatch):
    """The 2-stage K/V ring that GPUs with less shared memory than an H100 (A100, 4090) get."""
    from lmdeploy_sdk.native import driver

    monkeypatch.setattr(driver, "smem_limits", lambda index: (99 << 10, 100 << 10))  # a 4090's limits
    assert native_attention.decode_stages(head_dim, 2, *driver.smem_limits(0)) == 2
    kv_lens = [1, 17, 64, 65, 300, 1030, 4100]
    batch = make_paged_batch([1] * len(kv_lens), kv_lens, 28, 4, head_dim, 64, dtype, seed=head_dim)
    poison_allocator()
    out = native_attention.paged_decode(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.1, num_splits)
    _check(batch, 0.1, out)


@pytest.mark.parametrize("num_splits", [None, 1, 4])
def test_decode_reads_the_new_token_after_its_writer(num_splits):
    """Decode attention streams the old K/V rows before its predecessor finishes (PDL) and
    only the new token's row after: here the kernel just before it writes that row over
    NaN, so a read that came too early poisons the output."""
    from lmdeploy_sdk.native import kv_cache as native_kv_cache

    kv_lens = [1, 2, 64, 65, 127, 300, 1000, 3000]
    batch = make_paged_batch([1] * len(kv_lens), kv_lens, 32, 8, 128, 64, torch.bfloat16, seed=11)
    slots = batch.meta.slot_mapping
    gen = torch.Generator(device="cuda").manual_seed(0)
    new_k, new_v = (torch.randn((len(kv_lens), 8, 128), device="cuda", dtype=torch.bfloat16, generator=gen)
                    for _ in range(2))
    for _ in range(20):  # the race, if there were one, shows in some rounds
        for cache in (batch.k_cache, batch.v_cache):
            cache.view(-1, 8, 128)[slots] = float("nan")
        native_kv_cache.store_kv(new_k, new_v, batch.k_cache, batch.v_cache, slots)
        out = native_attention.paged_decode(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.088, num_splits)
        _check(batch, 0.088, out)
