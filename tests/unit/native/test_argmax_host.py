"""Host side of the argmax kernels without a GPU: grid split, kernel choice, fallbacks."""
from __future__ import annotations

import pytest
import torch

from lmdeploy_sdk.native import argmax, driver


@pytest.fixture
def launches(monkeypatch) -> list[dict]:
    calls: list[dict] = []

    def record(device, module, kernel, grid, block, args, shared_mem=0):
        calls.append({"module": module, "kernel": kernel, "grid": grid, "args": [a.value for a in args]})

    monkeypatch.setattr(driver, "launch", record)
    monkeypatch.setattr(driver, "sm_count", lambda index: 132)
    monkeypatch.setattr(driver, "device_index", lambda device: 0)
    return calls


@pytest.mark.parametrize(
    "rows, vocab, expected",
    [
        (1, 128256, 63),  # one 2048-element slice per CTA: 63 CTAs, merged by argmax_final
        (8, 128256, 63),
        (16, 128256, 33),  # about 4 CTAs per SM in all
        (528, 128256, 1),  # the rows fill the GPU: one CTA a row, no merge
        (4096, 32000, 1),
        (1, 100, 1),  # a row shorter than one slice
    ],
)
def test_num_parts(rows, vocab, expected):
    assert argmax.num_parts(rows, vocab, 132) == expected


def test_split_rows_launch_partial_then_final(launches):
    logits = torch.randn(2, 128256).to(torch.bfloat16)
    out = argmax.argmax(logits)
    assert out.dtype == torch.int64 and out.shape == (2,)
    partial, final = launches
    assert partial["kernel"] == "argmax_partial_vec_bf16" and partial["grid"] == (63, 2)
    part_v, part_i, out_ptr, x, vocab, stride, slice_len = partial["args"]
    assert (out_ptr, x, vocab, stride) == (out.data_ptr(), logits.data_ptr(), 128256, 128256)
    assert slice_len % 8 == 0 and slice_len * 63 >= 128256 > slice_len * 62
    assert final["kernel"] == "argmax_final" and final["grid"] == (2,)
    assert final["args"] == [out.data_ptr(), part_v, part_i, 63]


def test_one_cta_per_row_writes_the_answer_directly(launches):
    logits = torch.randn(600, 4096).to(torch.float16)
    argmax.argmax(logits)
    (call,) = launches
    assert call["kernel"] == "argmax_partial_vec_f16" and call["grid"] == (1, 600)
    assert call["args"][:2] == [None, None]  # no partials


def test_odd_vocab_uses_element_loads(launches):
    argmax.argmax(torch.randn(1, 50257).to(torch.bfloat16))
    assert launches[0]["kernel"] == "argmax_partial_bf16"


@pytest.mark.parametrize(
    "logits",
    [torch.randn(2, 64), torch.randn(64).to(torch.bfloat16), torch.randn(0, 64).to(torch.bfloat16),
     torch.randn(64, 2).to(torch.bfloat16).t()],
    ids=["float32", "1d", "no_rows", "transposed"],
)
def test_fallbacks_are_torch(launches, logits):
    assert torch.equal(argmax.argmax(logits), logits.argmax(dim=-1))
    assert launches == []
