"""The int4 weight form: rows <-> kernel layout, the fragment order the kernels assume,
dequantization, padding, and round-to-nearest quantization."""
from __future__ import annotations

import pytest
import torch

from lmdeploy_sdk.quant.int4 import (
    Int4Weight,
    RowsInt4,
    check_group_size,
    pack_nibbles,
    padded,
    quantize_rtn,
    unpack_nibbles,
)


def _rows(n: int, k: int, g: int, seed: int = 0) -> tuple[torch.Tensor, RowsInt4]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8)
    return q, RowsInt4(pack_nibbles(q), torch.rand(n, k // g, generator=gen), torch.randn(n, k // g, generator=gen))


def test_nibbles_round_trip_in_natural_order():
    q = torch.arange(16, dtype=torch.uint8).repeat(3, 2)  # [3, 32]
    packed = pack_nibbles(q)
    assert packed.shape == (3, 4) and packed.dtype == torch.int32
    assert int(packed[0, 0]) & 0xF == 0 and (int(packed[0, 0]) >> 28) & 0xF == 7  # input 8j + i at bits 4i
    assert torch.equal(unpack_nibbles(packed), q)
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_nibbles(q[:, :7])


@pytest.mark.parametrize("n, k, g", [(16, 64, 32), (20, 96, 32), (48, 576, 64), (33, 256, 128), (7, 512, 256)])
def test_kernel_layout_round_trip_and_dequantize(n, k, g):
    q, rows = _rows(n, k, g)
    w = Int4Weight.from_rows(rows, torch.float32)
    assert w.shape == (n, k) and w.dtype == torch.float32
    assert w.qweight.shape == (padded(n, 16) // 16, padded(k, 64) // 64, 32, 4)
    assert w.scale_min.shape == (padded(k, 64) // g, padded(n, 16), 2)
    assert torch.equal(w.values(), q)
    expected = q.float() * rows.scales.repeat_interleave(g, 1) + rows.mins.repeat_interleave(g, 1)
    assert torch.equal(w.dequantize(), expected)
    assert torch.equal(rows.dequantize(), expected)


def test_padding_holds_zero_weights():
    _, rows = _rows(20, 96, 32)
    w = Int4Weight.from_rows(rows, torch.float32)
    assert torch.count_nonzero(w.scale_min[:, 20:]) == 0 and torch.count_nonzero(w.scale_min[3:]) == 0


def test_lane_words_are_mma_a_fragments():
    """Lane l's word w of (tile, chunk) holds the m16n8k16 A fragment of inputs 16w..16w+15:
    nibble i at row g + 8 (i & 1), input 2t + (i >> 2) + 8 ((i >> 1) & 1), g = l // 4, t = l % 4."""
    q, rows = _rows(32, 128, 64, seed=1)
    w = Int4Weight.from_rows(rows, torch.float32)
    for tile, chunk, lane, word in [(0, 0, 0, 0), (1, 1, 13, 2), (0, 1, 31, 3), (1, 0, 6, 1)]:
        g, t = lane // 4, lane % 4
        bits = int(w.qweight[tile, chunk, lane, word])
        for i in range(8):
            row = 16 * tile + g + 8 * (i & 1)
            col = 64 * chunk + 16 * word + 2 * t + (i >> 2) + 8 * ((i >> 1) & 1)
            assert (bits >> (4 * i)) & 0xF == q[row, col]


def test_scales_round_to_the_activation_dtype():
    _, rows = _rows(16, 64, 32)
    w = Int4Weight.from_rows(rows, torch.bfloat16)
    assert w.scale_min.dtype == torch.bfloat16 and w.dequantize().dtype == torch.bfloat16
    assert w.nbytes == w.qweight.numel() * 4 + w.scale_min.numel() * 2


def test_group_size_checks_name_the_values():
    check_group_size(64, 576)
    with pytest.raises(ValueError, match="group_size=48 is not supported"):
        check_group_size(48, 576)
    with pytest.raises(ValueError, match="group_size=128 does not divide the 576 inputs of layer x"):
        check_group_size(128, 576, "layer x")


@pytest.mark.parametrize("symmetric", [False, True])
def test_round_to_nearest_stays_within_half_a_step(symmetric):
    w = torch.randn(24, 256)
    q, s, z = quantize_rtn(w, 64, symmetric)
    assert q.dtype == z.dtype == torch.uint8 and int(q.max()) <= 15
    if symmetric:
        assert torch.all(z == 8)
    deq = (q.float() - z.float().repeat_interleave(64, 1)) * s.repeat_interleave(64, 1)
    err = (deq - w).abs() / s.repeat_interleave(64, 1)
    assert float(err.max()) <= 0.5 + 1e-4  # half a quantization step (symmetric: |w| <= 7 s by construction)
    assert float(err.mean()) < 0.3
