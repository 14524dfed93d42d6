"""The int8/int4 KV cache format (quant/kv_cache.py): what is stored, how it reads back."""
from __future__ import annotations

import pytest
import torch

from lmdeploy_sdk.quant.kv_cache import (
    QuantizedKVCache,
    dequantize,
    hadamard,
    packed_dim,
    quantize,
    row_bytes,
)


@pytest.mark.parametrize("bits", [8, 4])
def test_round_trip_within_half_a_step(bits):
    x = torch.randn(50, 3, 64) * 4 + torch.randn(50, 3, 1)  # rows with offsets
    values, params = quantize(x, bits)
    assert values.dtype == torch.uint8 and values.shape == (50, 3, 64 * bits // 8)
    assert params.dtype == torch.float16 and params.shape == (50, 3, 2)
    back = dequantize(values, params, bits)
    step = params[..., :1].float()
    assert ((back - x).abs() <= step * 0.5 + 1e-3 * x.abs().amax(-1, keepdim=True)).all()
    # zero is the row's min, rounded to float16; the largest code reaches the max
    assert torch.equal(params[..., 1], x.amin(-1).half())


def test_int4_packs_element_j_with_j_plus_half():
    x = torch.arange(8.0).repeat(2).view(1, 1, 16)  # codes 0..7, 0..7 with scale 7/15
    values, params = quantize(x, 4)
    codes = torch.cat((values & 0xF, values >> 4), dim=-1)
    assert values.shape[-1] == 8
    assert torch.equal(values[0, 0, 0], torch.tensor(0 | (0 << 4), dtype=torch.uint8))
    assert torch.equal(codes[0, 0, :8], codes[0, 0, 8:])  # element j and j + 8 share byte j


def test_constant_row_reads_back_exactly():
    x = torch.full((1, 1, 64), 2.5)
    values, params = quantize(x, 8)
    assert params[0, 0, 0] == 0 and torch.equal(dequantize(values, params, 8), x)


def test_hadamard_is_orthonormal_and_symmetric():
    h = hadamard(128)
    assert torch.allclose(h @ h, torch.eye(128), atol=1e-5) and torch.equal(h, h.T)
    assert hadamard(96) is None


def test_sizes():
    assert packed_dim(128, 8) == 128 and packed_dim(128, 4) == 64
    assert row_bytes(128, 8) == 132 and row_bytes(128, 4) == 68
    with pytest.raises(ValueError, match="8 or 4"):
        packed_dim(128, 2)


@pytest.mark.parametrize("bits", [8, 4])
def test_store_gather_and_copy_blocks(bits):
    torch.manual_seed(0)
    cache = QuantizedKVCache.zeros(num_blocks=4, block_size=4, num_kv_heads=2, head_dim=64, bits=bits)
    assert cache.shape == (4, 4, 2, 64) and cache.head_dim == 64
    x = torch.randn(6, 2, 64)
    slots = torch.tensor([8, 9, 10, 11, 4, -1])  # block 2, then block 1 offset 0; -1 is padding
    cache.store(x, slots)
    got = cache.gather(torch.tensor([2, 1]), 5)  # [5, 2, 64] rotated rows
    want = x[:5].float() @ cache.rotation
    step = (want.amax(-1, keepdim=True) - want.amin(-1, keepdim=True)) / ((1 << bits) - 1)
    assert ((got - want).abs() <= step * 0.51).all()
    assert (cache.values[3] == 0).all(), "the padding row went nowhere"
    cache.copy_blocks(torch.tensor([2]), torch.tensor([0]))
    assert torch.equal(cache.gather(torch.tensor([0]), 4), got[:4])
    q = torch.randn(3, 64)
    assert torch.allclose(cache.rotate(cache.rotate(q)), q, atol=1e-5)
