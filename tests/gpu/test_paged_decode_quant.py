"""Decode attention over an int8/int4 KV cache (native.paged_decode_quant) vs the reference.

The reference reads the same QuantizedKVCache (dequantized to float32; built without a
rotation, as the kernel attends over the stored rows as they are), so the only differences
are the kernel's rounding: fp16 Q and P', fp32 accumulation, the output dtype.
"""
from __future__ import annotations

import functools

import pytest
import torch

from lmdeploy_sdk.native import paged_decode_quant as pdq
from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.ops.metadata import AttentionMetadata
from lmdeploy_sdk.quant.kv_cache import QuantizedKVCache, quantize
from native_attention_cases import make_paged_batch, poison_allocator, recorded_launches, relative_error

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16]
BITS = [8, 4]
# (Hq, Hkv): GQA groups 1, 2, 4, 8, 16 (one n8 column tile or two), groups that fill part of
# a tile (3, 7, 12), and a group of 32 served by two CTAs of 16 heads
HEADS = [(8, 8), (16, 8), (16, 4), (32, 4), (64, 4), (12, 4), (28, 4), (48, 4), (32, 1)]
TOLERANCE = {torch.float16: 3e-3, torch.bfloat16: 1.5e-2}


def quantized(cache: torch.Tensor, bits: int) -> QuantizedKVCache:
    """The cache quantized row by row; rows no sequence owns hold NaN params (poison). No
    rotation: the kernel attends over the rows as stored (its caller rotates q and the output)."""
    values, params = quantize(cache, bits)
    return QuantizedKVCache(values=values.contiguous(), params=params.contiguous(), bits=bits, rotation=None)


def make_batch(kv_lens, heads, head_dim, block_size, dtype, bits, seed):
    batch = make_paged_batch([1] * len(kv_lens), kv_lens, *heads, head_dim, block_size, dtype, seed=seed)
    return batch, quantized(batch.k_cache, bits), quantized(batch.v_cache, bits)


@functools.cache
def long_batch(dtype, bits):
    """The long-context case, built once per (dtype, bits): its 50k tokens take a while on the CPU."""
    return make_batch((8192, 32768, 9001, 700), (32, 8), 128, 64, dtype, bits, seed=7)


def check(batch, kq, vq, scale, out, rows=None):
    ref = reference.paged_attention(batch.q.float(), kq, vq, batch.meta, scale)
    assert out.shape == batch.q.shape and out.dtype == batch.q.dtype
    rows = slice(None) if rows is None else rows
    err = relative_error(out[rows], ref[rows])
    assert err < TOLERANCE[batch.q.dtype], f"relative error {err}"


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("block_size", [64, 48])
def test_decode_quant_ragged_batch(bits, dtype, head_dim, heads, block_size):
    # lengths 1, block boundaries (k * block_size and +-1), tile boundaries (64 +-1), ragged
    kv_lens = [1, 2, block_size - 1, block_size, block_size + 1, 63, 64, 65, 2 * block_size, 300, 1030]
    batch, kq, vq = make_batch(kv_lens, heads, head_dim, block_size, dtype, bits, seed=block_size + bits)
    assert pdq.served(batch.q, kq, vq)
    scale = head_dim**-0.5
    poison_allocator()
    with recorded_launches() as names:
        out = pdq.paged_decode_quant(batch.q, kq, vq, batch.meta, scale)
    assert names and names[0].startswith(f"paged_decode_q{bits}_")
    check(batch, kq, vq, scale, out)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_splits", [None, 1, 3, 16])
def test_decode_quant_long_context_splits(bits, dtype, num_splits):
    batch, kq, vq = long_batch(dtype, bits)
    poison_allocator()
    out = pdq.paged_decode_quant(batch.q, kq, vq, batch.meta, 0.088, num_splits=num_splits)
    check(batch, kq, vq, 0.088, out)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("block_size", [16, 48, 128])
def test_decode_quant_block_sizes_and_splits(bits, block_size):
    """Blocks smaller than a tile, not a power of two, larger than a tile; forced splits."""
    kv_lens = [5000, 129, 1]
    batch, kq, vq = make_batch(kv_lens, (32, 8), 128, block_size, torch.bfloat16, bits, seed=11)
    for num_splits in (2, 7):
        out = pdq.paged_decode_quant(batch.q, kq, vq, batch.meta, 0.1, num_splits=num_splits)
        check(batch, kq, vq, 0.1, out)


@pytest.mark.parametrize("bits", BITS)
def test_decode_quant_padding_rows(bits):
    """CUDA-graph padding: extra rows with kv_len 1 and an all-zero block table; the real rows
    stay exact, the padding rows come out finite and are not compared."""
    batch, kq, vq = make_batch([700, 65, 3000], (32, 8), 128, 64, torch.bfloat16, bits, seed=5)
    # give every slot of block 0 a finite row so padding rows read data, as in the engine
    kq.values[0].random_(0, 256), vq.values[0].random_(0, 256)
    kq.params[0].fill_(0.01), vq.params[0].fill_(0.01)
    real = batch.meta
    pad = 2
    meta = AttentionMetadata.from_lists(
        [1] * (real.num_seqs + pad), real.kv_lens_cpu + [1] * pad,
        real.block_tables.cpu().tolist() + [[0]] * pad, [0] * (real.num_seqs + pad), real.block_size,
        torch.device("cuda"),
    )
    q = torch.randn((real.num_seqs + pad, 32, 128), device="cuda", dtype=torch.bfloat16)
    q[: real.num_seqs] = batch.q
    out = pdq.paged_decode_quant(q, kq, vq, meta, 0.088)
    assert torch.isfinite(out).all()
    check(batch, kq, vq, 0.088, out[: real.num_seqs])


@pytest.mark.parametrize("bits", BITS)
def test_decode_quant_strided_query_and_out(bits):
    # q as the query slice of a fused qkv projection: [B, (Hq + 2 Hkv) * D]; out given
    batch, kq, vq = make_batch([33, 500, 2000], (16, 4), 128, 32, torch.bfloat16, bits, seed=3)
    qkv = torch.randn((3, (16 + 8) * 128), device="cuda", dtype=torch.bfloat16)
    q = qkv[:, : 16 * 128].view(3, 16, 128)
    q.copy_(batch.q)
    batch.q = q
    out = torch.full((3, 16, 128), float("nan"), device="cuda", dtype=torch.bfloat16)
    assert pdq.paged_decode_quant(q, kq, vq, batch.meta, 0.1, out=out) is out
    check(batch, kq, vq, 0.1, out)


def test_served():
    batch, kq, vq = make_batch([10], (8, 2), 128, 16, torch.bfloat16, 8, seed=1)
    assert pdq.served(batch.q, kq, vq)
    assert not pdq.served(batch.q, batch.k_cache, batch.v_cache)  # a 16-bit cache
    assert not pdq.served(batch.q.float(), kq, vq)
    _, k4, v4 = make_batch([10], (8, 2), 128, 16, torch.bfloat16, 4, seed=1)
    assert not pdq.served(batch.q, kq, v4)  # mixed bits
    b96, k96, v96 = make_batch([10], (8, 2), 96, 16, torch.bfloat16, 8, seed=1)
    assert not pdq.served(b96.q, k96, v96)  # head dim without a kernel


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("stages", pdq.STAGES)
def test_decode_quant_each_ring_depth(bits, stages):
    """stages (bench_kv_quant --sweep) picks that kernel; every depth gives the reference's result."""
    batch, kq, vq = long_batch(torch.bfloat16, bits)
    with recorded_launches() as names:
        out = pdq.paged_decode_quant(batch.q, kq, vq, batch.meta, 0.088, num_splits=5, stages=stages)
    assert names[0].endswith(f"_s{stages}")
    check(batch, kq, vq, 0.088, out)
    with pytest.raises(ValueError, match="stages must be one of"):
        pdq.paged_decode_quant(batch.q, kq, vq, batch.meta, 0.088, stages=3)
