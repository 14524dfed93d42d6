"""RMSNorm, residual+RMSNorm, RoPE, SiLU-and-mul and the KV-cache write vs the reference."""
from __future__ import annotations

import pytest
import torch

from lmdeploy_sdk import native, ops
from lmdeploy_sdk.native import driver
from lmdeploy_sdk.ops import reference
from native_attention_cases import poison_allocator

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16]


def _randn(*shape, dtype, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(shape, generator=gen, device="cuda", dtype=torch.float32).to(dtype)


def _close(out, ref, dtype):
    # The kernels round where torch rounds; sums differ only in fp32 summation order.
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=2e-2 if dtype == torch.bfloat16 else 2e-3, atol=2e-3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 4096), (7, 2048), (3, 8, 128), (5, 16), (2, 16384), (33, 1000)])
def test_rms_norm(dtype, shape):
    x = _randn(*shape, dtype=dtype, seed=0) * 3
    w = _randn(shape[-1], dtype=dtype, seed=1)
    poison_allocator()
    _close(ops.rms_norm(x, w, 1e-6), reference.rms_norm(x, w, 1e-6), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 4096), (9, 3584), (4, 64)])
def test_add_rms_norm(dtype, shape):
    x = _randn(*shape, dtype=dtype, seed=2)
    res = _randn(*shape, dtype=dtype, seed=3) * 10
    w = _randn(shape[-1], dtype=dtype, seed=4)
    poison_allocator()
    out, summed = ops.add_rms_norm(x, res, w, 1e-5)
    ref_out, ref_summed = reference.add_rms_norm(x, res, w, 1e-5)
    torch.testing.assert_close(summed, ref_summed, rtol=0, atol=0)
    _close(out, ref_out, dtype)


def test_rms_norm_non_contiguous_input():
    x = _randn(6, 2, 512, dtype=torch.bfloat16, seed=5)[:, 1]  # [6, 512], row stride 1024
    w = _randn(512, dtype=torch.bfloat16, seed=6)
    _close(ops.rms_norm(x, w, 1e-6), reference.rms_norm(x, w, 1e-6), torch.bfloat16)


def _cos_sin(max_pos: int, head_dim: int) -> torch.Tensor:
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float32), inv_freq)  # [max_pos, D/2]
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1).cuda()  # [max_pos, D]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim, hq, hkv", [(128, 32, 8), (64, 8, 8), (128, 28, 4)])
def test_apply_rope_on_qkv_views(dtype, head_dim, hq, hkv):
    tokens = 37
    qkv = _randn(tokens, (hq + 2 * hkv) * head_dim, dtype=dtype, seed=7)
    q = qkv[:, : hq * head_dim].view(tokens, hq, head_dim)
    k = qkv[:, hq * head_dim : (hq + hkv) * head_dim].view(tokens, hkv, head_dim)
    positions = torch.randint(0, 4096, (tokens,), device="cuda")
    cos_sin = _cos_sin(4096, head_dim)
    poison_allocator()
    q_out, k_out = ops.apply_rope(q, k, positions, cos_sin)
    q_ref, k_ref = reference.apply_rope(q, k, positions, cos_sin)
    _close(q_out, q_ref, dtype)
    _close(k_out, k_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim, hq, hkv, block_size", [(128, 32, 8, 64), (64, 8, 8, 16), (128, 28, 4, 24)])
def test_rope_store_kv_equals_rope_then_store(dtype, head_dim, hq, hkv, block_size):
    tokens, num_blocks = 37, 5
    qkv = _randn(tokens, (hq + 2 * hkv) * head_dim, dtype=dtype, seed=14)
    q, k, v = qkv.split([hq * head_dim, hkv * head_dim, hkv * head_dim], dim=-1)
    q, k, v = q.view(tokens, hq, head_dim), k.view(tokens, hkv, head_dim), v.view(tokens, hkv, head_dim)
    positions = torch.randint(0, 4096, (tokens,), device="cuda")
    slots = torch.randperm(num_blocks * block_size, device="cuda")[:tokens]
    slots[3] = -1  # a padding row: q is still rotated, nothing is stored
    cos_sin = _cos_sin(4096, head_dim)
    caches = [_randn(num_blocks, block_size, hkv, head_dim, dtype=dtype, seed=s) for s in (15, 16)]
    ref_caches = [c.clone() for c in caches]
    poison_allocator()
    calls = []
    real_launch = driver.launch
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(driver, "launch", lambda *a, **kw: (calls.append(a[2]), real_launch(*a, **kw)))
        q_out = ops.rope_store_kv(q, k, v, positions, cos_sin, *caches, slots)
    assert calls == [f"rope_store_kv_{driver.dtype_suffix(dtype)}"]  # one fused launch
    q_rot, k_rot = reference.apply_rope(q, k, positions, cos_sin)
    keep = slots >= 0
    reference.store_kv(k_rot[keep], v[keep], *ref_caches, slots[keep])
    torch.testing.assert_close(q_out, q_rot, rtol=0, atol=0)  # the same rounding as the reference
    torch.testing.assert_close(caches[0], ref_caches[0], rtol=0, atol=0)
    torch.testing.assert_close(caches[1], ref_caches[1], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 2 * 1376), (1, 16), (3, 4, 2 * 64), (64, 2 * 14336)])
def test_silu_and_mul(dtype, shape):
    x = _randn(*shape, dtype=dtype, seed=8) * 4
    poison_allocator()
    _close(ops.silu_and_mul(x), reference.silu_and_mul(x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim, hkv, block_size", [(128, 8, 64), (64, 2, 16), (128, 1, 48)])
def test_store_kv_from_qkv_views(dtype, head_dim, hkv, block_size):
    tokens, hq, num_blocks = 50, 4, 9
    qkv = _randn(tokens, (hq + 2 * hkv) * head_dim, dtype=dtype, seed=9)
    k = qkv[:, hq * head_dim : (hq + hkv) * head_dim].view(tokens, hkv, head_dim)
    v = qkv[:, (hq + hkv) * head_dim :].view(tokens, hkv, head_dim)
    slots = torch.randperm(num_blocks * block_size, device="cuda")[:tokens]
    caches = [_randn(num_blocks, block_size, hkv, head_dim, dtype=dtype, seed=s) for s in (10, 11)]
    ref_caches = [c.clone() for c in caches]
    ops.store_kv(k, v, caches[0], caches[1], slots)
    reference.store_kv(k, v, ref_caches[0], ref_caches[1], slots)
    torch.testing.assert_close(caches[0], ref_caches[0], rtol=0, atol=0)
    torch.testing.assert_close(caches[1], ref_caches[1], rtol=0, atol=0)


def test_store_kv_skips_negative_slots():
    k = _randn(3, 2, 64, dtype=torch.float16, seed=12)
    v = _randn(3, 2, 64, dtype=torch.float16, seed=13)
    k_cache = torch.zeros((2, 16, 2, 64), dtype=torch.float16, device="cuda")
    v_cache = torch.zeros_like(k_cache)
    native.get_op("store_kv", torch.float16)(k, v, k_cache, v_cache, torch.tensor([5, -1, 20], device="cuda"))
    flat = k_cache.view(32, 2, 64)
    torch.testing.assert_close(flat[5], k[0], rtol=0, atol=0)
    torch.testing.assert_close(flat[20], k[2], rtol=0, atol=0)
    flat[5] = 0
    flat[20] = 0
    assert (k_cache == 0).all() and (v_cache.view(32, 2, 64)[[5, 20]] == v[[0, 2]]).all()


@pytest.mark.parametrize("name", native.OP_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_get_op_serves_every_op_on_gpu(name, dtype):
    assert callable(native.get_op(name, dtype))
    assert native.get_op(name, torch.float32) is None
