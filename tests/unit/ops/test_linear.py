"""ops.linear / ops.silu_mul_linear / ops.rms_norm_linear on CPU are their torch definitions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmdeploy_sdk import ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("lead", [(1,), (3,), (2, 1), ()])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_is_f_linear(dtype, lead, with_bias):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*lead, 24, generator=gen).to(dtype)
    w = torch.randn(10, 24, generator=gen).to(dtype)
    b = torch.randn(10, generator=gen).to(dtype) if with_bias else None
    out = ops.linear(x, w, b)
    assert out.shape == (*lead, 10) and out.dtype == dtype
    assert torch.equal(out, F.linear(x, w, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_silu_mul_linear_is_down_of_silu_and_mul(dtype, with_bias):
    gen = torch.Generator().manual_seed(1)
    gate_up = (torch.randn(2, 1, 2 * 16, generator=gen) * 3).to(dtype)
    w = torch.randn(5, 16, generator=gen).to(dtype)
    b = torch.randn(5, generator=gen).to(dtype) if with_bias else None
    gate, up = gate_up.chunk(2, dim=-1)
    expected = F.linear(F.silu(gate) * up, w, b)
    out = ops.silu_mul_linear(gate_up, w, b)
    assert out.shape == (2, 1, 5)
    assert torch.equal(out, expected)
    assert torch.equal(out, ops.linear(ops.silu_and_mul(gate_up), w, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_linear_is_norm_then_linear(dtype, with_residual):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 32, generator=gen).to(dtype)
    residual = torch.randn(3, 32, generator=gen).to(dtype) if with_residual else None
    norm_w, w = torch.randn(32, generator=gen).to(dtype), torch.randn(6, 32, generator=gen).to(dtype)
    out, summed = ops.rms_norm_linear(x, residual, norm_w, 1e-5, w)
    if residual is None:
        normed, expected_sum = ops.rms_norm(x, norm_w, 1e-5), x
    else:
        normed, expected_sum = ops.add_rms_norm(x, residual, norm_w, 1e-5)
    assert torch.equal(summed, expected_sum)
    assert torch.equal(out, F.linear(normed, w))
