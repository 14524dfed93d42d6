"""Host side of the GEMV kernels without a GPU: which calls reach a kernel, its grid and arguments.

driver.launch is replaced by a recorder, so served calls return uninitialised tensors
and only the launch is checked; calls that fall back run torch on the CPU and must equal
F.linear exactly.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmdeploy_sdk.native import driver, gemv

SMEM_LIMIT = driver.DEFAULT_SMEM_LIMIT


@pytest.fixture
def launches(monkeypatch) -> list[dict]:
    calls: list[dict] = []

    def record(device, module, kernel, grid, block, args, shared_mem=0):
        calls.append(
            {"module": module, "kernel": kernel, "grid": grid, "block": block, "args": args, "shared_mem": shared_mem}
        )

    monkeypatch.setattr(driver, "launch", record)
    monkeypatch.setattr(gemv, "_smem_limit", lambda device: SMEM_LIMIT)
    monkeypatch.setattr(gemv, "_resident_ctas", lambda device, kernel, shared_mem: 4 * 132)
    return calls


def _rand(*shape, dtype=torch.bfloat16):
    return torch.randn(shape, dtype=torch.float32).to(dtype)


@pytest.mark.parametrize(
    "n, resident, expected",
    [
        (4096, 528, 512),  # o_proj, 4 CTAs/SM on 132 SMs: one round, every warp one row
        (4096, 264, 256),  # 2 CTAs/SM: two full rounds, not one full and one 94% idle
        (4096, 396, 256),  # 3 CTAs/SM: two rounds still; fewer CTAs than slots is fine
        (6144, 528, 384),
        (28672, 528, 512),  # 7 rounds of 512 CTAs (3584 groups of 8 rows)
        (128256, 528, 518),  # lm_head: 31 rounds
        (1, 528, 1),
        (9, 528, 2),
    ],
)
def test_num_ctas(n, resident, expected):
    grid = gemv.num_ctas(n, resident)
    assert grid == expected and grid <= resident
    rounds = -(-n // (gemv.WARPS * grid))
    assert rounds == -(-n // (gemv.WARPS * resident))  # no more rounds than the GPU needs
    assert (rounds - 1) * gemv.WARPS * grid < n  # and no empty round


def test_served_launch_arguments(launches):
    x, w, b = _rand(2, 1, 4096), _rand(6144, 4096), _rand(6144)
    out = gemv.linear(x, w, b)
    assert out.shape == (2, 1, 6144)
    (call,) = launches
    assert call["module"] == "gemv" and call["kernel"] == "gemv_bf16_m2"
    assert call["grid"] == (384,) and call["block"] == (256,)
    assert call["shared_mem"] == 2 * 4096 * 2
    ptrs = [a.value for a in call["args"][:4]]
    assert ptrs == [out.data_ptr(), x.data_ptr(), w.data_ptr(), b.data_ptr()]
    assert [a.value for a in call["args"][4:]] == [6144, 4096, 4096]


def test_gated_launch_arguments(launches):
    x, residual, norm_w, w = _rand(2, 4096), _rand(2, 4096), _rand(4096), _rand(2 * 14336, 4096)
    act, summed = gemv.rms_norm_gated_linear(x, residual, norm_w, 1e-5, w)
    assert act.shape == (2, 14336) and summed.shape == (2, 4096)
    (call,) = launches
    assert call["kernel"] == "rms_norm_gated_gemv_bf16_m2"
    assert call["shared_mem"] == 2 * 4096 * 2
    ptrs = [a.value for a in call["args"][:5]]
    assert ptrs == [act.data_ptr(), summed.data_ptr(), x.data_ptr(), residual.data_ptr(), norm_w.data_ptr()]
    assert call["args"][7].value is None  # no bias
    assert [a.value for a in call["args"][8:]] == [14336, 4096, 4096]  # N outputs (2N weight rows)


def test_first_layer_norm_returns_x_as_the_sum(launches):
    x, norm_w, w = _rand(1, 64), _rand(64), _rand(10, 64)
    out, summed = gemv.rms_norm_linear(x, None, norm_w, 1e-5, w)
    assert summed is x and out.shape == (1, 10)
    (call,) = launches
    assert call["kernel"] == "rms_norm_gemv_bf16_m1"
    assert call["args"][1].value is None and call["args"][3].value is None  # no sum, no residual


def test_strided_rows_are_read_in_place(launches):
    buf = _rand(2, 64 + 8)
    gemv.linear(buf[:, :64], _rand(10, 64))
    assert launches[-1]["args"][1].value == buf.data_ptr()
    assert launches[-1]["args"][6].value == 72  # the row stride goes to the kernel
    gemv.linear(buf[:, 1:65], _rand(10, 64))  # 2 bytes off 16-byte alignment: copied
    assert launches[-1]["args"][1].value != buf.data_ptr() + 2
    assert launches[-1]["args"][6].value == 64


def _misaligned(n, k):
    return torch.randn(n * k + 1).to(torch.bfloat16)[1:].view(n, k)


@pytest.mark.parametrize(
    "case",
    [
        "five_rows",
        "k_not_multiple_of_8",
        "transposed_weight",
        "misaligned_weight",
        "float32",
        "bias_dtype",
        "bias_shape",
        "x_too_big_for_shared_memory",
        "no_rows",
    ],
)
def test_fallbacks_are_torch(launches, case):
    x, w, b = _rand(2, 64), _rand(16, 64), None
    if case == "five_rows":
        x = _rand(5, 64)
    elif case == "k_not_multiple_of_8":
        x, w = _rand(2, 60), _rand(16, 60)
    elif case == "transposed_weight":
        w = _rand(64, 16).t()
    elif case == "misaligned_weight":
        w = _misaligned(16, 64)
    elif case == "float32":
        x, w = x.float(), w.float()
    elif case == "bias_dtype":
        b = torch.randn(16)
    elif case == "bias_shape":
        b = _rand(1)
    elif case == "x_too_big_for_shared_memory":
        x, w = _rand(4, SMEM_LIMIT // 8 + 8), _rand(3, SMEM_LIMIT // 8 + 8)
    elif case == "no_rows":
        x = _rand(0, 64)
    if case == "bias_dtype":
        with pytest.raises(RuntimeError):  # torch refuses mixed dtypes too
            gemv.linear(x, w, b)
    else:
        assert torch.equal(gemv.linear(x, w, b), F.linear(x, w, b))
    assert launches == []


def test_largest_x_that_fits_is_served(launches):
    k = SMEM_LIMIT // (2 * gemv.MAX_ROWS)  # MAX_ROWS rows * k * 2 bytes == the limit
    gemv.linear(_rand(gemv.MAX_ROWS, k), _rand(3, k))
    assert launches[-1]["kernel"] == f"gemv_bf16_m{gemv.MAX_ROWS}" and launches[-1]["shared_mem"] == SMEM_LIMIT


def test_gated_fallback_is_the_unfused_kernels(launches):
    x, residual, norm_w = _rand(5, 64), _rand(5, 64), _rand(64)
    act, _ = gemv.rms_norm_gated_linear(x, residual, norm_w, 1e-5, _rand(32, 64))  # 5 rows
    assert act.shape == (5, 16)
    assert [c["kernel"] for c in launches] == ["rms_norm_bf16", "silu_and_mul_bf16"]  # torch between
    with pytest.raises(ValueError, match="2I, K"):
        gemv.rms_norm_gated_linear(x, residual, norm_w, 1e-5, _rand(31, 64))
