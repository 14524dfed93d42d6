"""Checkpoint layouts -> rows layout, against hand-packed words (AutoAWQ's interleaved
order, GPTQ's natural order and its +1 zero points) and gguf-py's own Q4 quantizer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmdeploy_sdk.quant import formats
from lmdeploy_sdk.quant.int4 import unpack_nibbles


def _word(nibbles: list[int]) -> int:
    value = sum(v << (4 * j) for j, v in enumerate(nibbles))
    return value - 2**32 if value >= 2**31 else value


def test_awq_words_hold_columns_0_2_4_6_1_3_5_7():
    # one row, eight columns with values 1..8: nibble j holds column (0, 2, 4, 6, 1, 3, 5, 7)[j]
    packed = torch.tensor([[_word([1, 3, 5, 7, 2, 4, 6, 8])]], dtype=torch.int32)
    assert formats.awq_unpack(packed).tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]
    q = torch.randint(0, 16, (5, 40), dtype=torch.uint8)
    assert torch.equal(formats.awq_unpack(formats.awq_pack(q)), q)


def test_awq_qweight_and_qzeros_become_rows():
    q = torch.randint(0, 16, (64, 24), dtype=torch.uint8)  # [K, N]
    rows = formats.awq_qweight(formats.awq_pack(q))  # [N, K/8]
    assert torch.equal(unpack_nibbles(rows), q.t())
    z = torch.randint(0, 16, (2, 24), dtype=torch.uint8)  # [K/G, N]
    assert torch.equal(formats.awq_qzeros(formats.awq_pack(z)), z.t().float())
    with pytest.raises(ValueError, match="int32"):
        formats.awq_qweight(q.to(torch.int64))


def test_gptq_words_pack_inputs_and_store_zero_minus_one():
    qweight = torch.tensor([[_word(list(range(8)))], [_word([15] * 8)]], dtype=torch.int32)  # [K/8 = 2, N = 1]
    assert unpack_nibbles(formats.gptq_qweight(qweight)).tolist() == [list(range(8)) + [15] * 8]
    qzeros = torch.tensor([[_word([7, 0, 1, 2, 3, 4, 5, 6])]], dtype=torch.int32)  # [K/G = 1, N = 8]
    assert formats.gptq_qzeros(qzeros).flatten().tolist() == [8, 1, 2, 3, 4, 5, 6, 7]
    assert formats.gptq_qzeros(qzeros, offset=0).flatten().tolist() == [7, 0, 1, 2, 3, 4, 5, 6]


def test_group_scales_transpose_to_rows():
    s = torch.rand(3, 10, dtype=torch.float16)
    assert torch.equal(formats.group_scales(s), s.t().float())
    with pytest.raises(ValueError, match="2-D float"):
        formats.group_scales(torch.zeros(3, dtype=torch.int32))


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_gguf_blocks_dequantize_as_gguf_does(kind):
    from gguf import GGMLQuantizationType, quants

    data = np.random.default_rng(0).standard_normal((6, 96)).astype(np.float32)
    qtype = getattr(GGMLQuantizationType, kind)
    blocks = quants.quantize(data, qtype)
    rows = formats.gguf_q4_rows(blocks, kind, (6, 96))
    assert torch.equal(rows.dequantize(), torch.from_numpy(quants.dequantize(blocks, qtype)))
    with pytest.raises(ValueError, match="Q4_0 and Q4_1"):
        formats.gguf_q4_rows(blocks, "Q8_0", (6, 96))
