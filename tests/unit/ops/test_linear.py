"""ops.linear / ops.rms_norm_linear / ops.rms_norm_gated_linear on CPU are their torch definitions."""
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_gated_linear_is_silu_and_mul_of_the_projection(dtype):
    gen = torch.Generator().manual_seed(3)
    x, residual = torch.randn(2, 32, generator=gen).to(dtype), torch.randn(2, 32, generator=gen).to(dtype)
    norm_w, w = torch.randn(32, generator=gen).to(dtype), torch.randn(2 * 7, 32, generator=gen).to(dtype)
    b = torch.randn(2 * 7, generator=gen).to(dtype)
    act, summed = ops.rms_norm_gated_linear(x, residual, norm_w, 1e-5, w, b)
    gate_up, expected_sum = ops.rms_norm_linear(x, residual, norm_w, 1e-5, w, b)
    gate, up = gate_up.chunk(2, dim=-1)
    assert act.shape == (2, 7) and torch.equal(summed, expected_sum)
    assert torch.equal(act, F.silu(gate) * up)
