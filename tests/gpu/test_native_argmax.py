"""ops.argmax (greedy decoding's last op) against torch.argmax: ties, NaN, -inf, odd
vocabularies, strided rows, and row counts on both sides of the one-CTA-per-row switch."""
from __future__ import annotations

import pytest
import torch

from lmdeploy_sdk import ops
from lmdeploy_sdk.native import argmax as native_argmax
from lmdeploy_sdk.native import driver
from native_attention_cases import poison_allocator

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16]


def _logits(rows: int, vocab: int, dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(rows, vocab, generator=gen, device="cuda") * 4).to(dtype)


def _launched(monkeypatch) -> list[str]:
    names: list[str] = []
    real = driver.launch
    monkeypatch.setattr(driver, "launch", lambda *a, **kw: (names.append(a[2]), real(*a, **kw))[1])
    return names


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "rows, vocab",
    [(1, 128256), (1, 151936), (3, 32000), (1, 50257), (2, 7), (1, 1), (64, 128256), (1000, 32000), (5, 2048)],
)
def test_matches_torch(monkeypatch, dtype, rows, vocab):
    logits = _logits(rows, vocab, dtype, seed=rows + vocab)
    poison_allocator()
    names = _launched(monkeypatch)
    out = ops.argmax(logits)
    assert names and names[0].startswith("argmax_partial")  # the kernel ran, not torch
    assert out.dtype == torch.int64 and out.shape == (rows,)
    assert torch.equal(out, logits.argmax(dim=-1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_take_the_first_index(dtype):
    logits = torch.zeros(4, 40000, dtype=dtype, device="cuda")
    logits[0, [5, 17, 39999]] = 3.0
    logits[1, [39999, 20000]] = 1.0
    logits[2] = -1.0  # all equal: index 0
    logits[3, [31000, 31001, 9]] = 2.0
    assert ops.argmax(logits).tolist() == [5, 20000, 0, 9] == logits.argmax(dim=-1).tolist()


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf(dtype):
    logits = _logits(5, 65536, dtype, seed=3)
    logits[0, 40000] = float("nan")  # NaN wins over any number
    logits[1, [100, 60000]] = float("nan")  # the first NaN
    logits[2] = float("-inf")  # all -inf: index 0
    logits[3, 12345] = float("inf")
    logits[4, [7, 64000]] = float("inf")
    out = ops.argmax(logits)
    assert out.tolist() == [40000, 100, 0, 12345, 7] == logits.argmax(dim=-1).tolist()


def test_strided_rows_and_the_scalar_kernel(monkeypatch):
    base = _logits(6, 50000, torch.bfloat16, seed=4)
    names = _launched(monkeypatch)
    rows = base[::2]  # row stride 100000 elements: still whole 16-byte vectors
    assert torch.equal(ops.argmax(rows), rows.argmax(dim=-1))
    assert names[0] == "argmax_partial_vec_bf16"
    names.clear()
    view = base[:, 3:49999]  # rows start off 16-byte alignment: element loads
    assert torch.equal(ops.argmax(view), view.argmax(dim=-1))
    assert names[0] == "argmax_partial_bf16"


@pytest.mark.parametrize("rows", [1, 2, 700])
def test_grid_split(monkeypatch, rows):
    """A few rows split over many CTAs (then merged); a large batch takes one CTA a row."""
    logits = _logits(rows, 128256, torch.bfloat16, seed=rows)
    names = _launched(monkeypatch)
    out = ops.argmax(logits)
    parts = native_argmax.num_parts(rows, 128256, driver.sm_count(0))
    assert names == (["argmax_partial_vec_bf16", "argmax_final"] if parts > 1 else ["argmax_partial_vec_bf16"])
    assert torch.equal(out, logits.argmax(dim=-1))


def test_float32_and_empty_fall_back_to_torch(monkeypatch):
    names = _launched(monkeypatch)
    x = torch.randn(3, 1000, device="cuda")
    assert torch.equal(ops.argmax(x), x.argmax(dim=-1))
    assert ops.argmax(torch.empty(0, 10, dtype=torch.bfloat16, device="cuda")).shape == (0,)
    assert names == []


def test_cuda_graph_replay():
    logits = _logits(2, 128256, torch.bfloat16, seed=9)
    ops.argmax(logits)  # load the module outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ops.argmax(logits)
    logits.copy_(_logits(2, 128256, torch.bfloat16, seed=10))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, logits.argmax(dim=-1))
