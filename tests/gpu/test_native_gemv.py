"""The decode GEMV kernels (ops.linear, ops.rms_norm_linear, ops.rms_norm_gated_linear)
against fp64 and the unfused ops.

Every call records its launches, so a wrapper that silently fell back to torch fails:
1..MAX_ROWS rows must run exactly one gemv kernel, more rows none.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmdeploy_sdk import ops
from lmdeploy_sdk.native import driver, gemv
from native_attention_cases import poison_allocator, recorded_launches as launches

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16]
ROWS = [*range(1, gemv.MAX_ROWS + 1), gemv.MAX_ROWS + 1, 5]  # past MAX_ROWS: torch
# (N, K): tiny and odd N, N not a multiple of the 8 rows a CTA takes, K with a partial
# last chunk (4104), and the Llama-3-8B decode shapes (lm_head stood in for by 50257).
SHAPES = [
    (1, 8),
    (7, 64),
    (8, 4104),
    (100, 4096),
    (100, 4104),
    (4096, 8),
    (4096, 4096),
    (6144, 4096),
    (7, 14336),
    (4096, 14336),
    (50257, 4096),
]
GATED_SHAPES = [(1, 8), (7, 64), (100, 4104), (14336, 4096)]  # (I, K): weight [2I, K]


def _randn(*shape, dtype, seed, scale=1.0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(shape, generator=gen, device="cuda", dtype=torch.float32) * scale).to(dtype)


def _weights(n, k, dtype, with_bias, seed=0):
    w = _randn(n, k, dtype=dtype, seed=seed, scale=k**-0.5)  # outputs of order 1
    b = _randn(n, dtype=dtype, seed=seed + 1) if with_bias else None
    return w, b


def _assert_near_fp64(out, x, w, b, dtype):
    """Within half an ulp of T of the exact result (atol: fp32 summation noise, far
    below what a wrong element, row or chunk would cost)."""
    ref = x.double() @ w.double().T
    if b is not None:
        ref = ref + b.double()
    assert torch.isfinite(out).all()
    half_ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    torch.testing.assert_close(out.double(), ref, rtol=half_ulp, atol=1e-3)


def _served_rows(m: int, k: int, dtype) -> bool:
    fits = m * k * torch.empty((), dtype=dtype).element_size() <= gemv._smem_limit(torch.device("cuda"))
    return m <= gemv.MAX_ROWS and fits


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear(dtype, n, k, with_bias):
    w, b = _weights(n, k, dtype, with_bias)
    sfx = driver.dtype_suffix(dtype)
    for m in ROWS:
        x = _randn(m, k, dtype=dtype, seed=10 + m)
        poison_allocator()
        with launches() as names:
            out = ops.linear(x, w, b)
        assert out.shape == (m, n)
        if _served_rows(m, k, dtype):
            assert names == [f"gemv_{sfx}_m{m}"]
            _assert_near_fp64(out, x, w, b, dtype)
        else:
            assert names == []
            assert torch.equal(out, F.linear(x, w, b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k", GATED_SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_rms_norm_gated_linear(dtype, n, k, with_bias):
    w, b = _weights(2 * n, k, dtype, with_bias, seed=2)  # [gate | up]
    norm_w = _randn(k, dtype=dtype, seed=21, scale=0.5) + 1
    sfx = driver.dtype_suffix(dtype)
    for m in ROWS:
        x = _randn(m, k, dtype=dtype, seed=22 + m, scale=3.0)
        residual = _randn(m, k, dtype=dtype, seed=32 + m)
        poison_allocator()
        with launches() as names:
            act, summed = ops.rms_norm_gated_linear(x, residual, norm_w, 1e-5, w, b)
        normed, expected_sum = ops.add_rms_norm(x, residual, norm_w, 1e-5)
        gate_up = ops.linear(normed, w, b)
        assert act.shape == (m, n) and torch.equal(summed, expected_sum)
        if m > gemv.MAX_ROWS:
            assert names[0] == f"rms_norm_{sfx}"  # the unfused ops: norm kernel, torch, activation
            assert torch.equal(act, ops.silu_and_mul(gate_up))
            continue
        assert names == [f"rms_norm_gated_gemv_{sfx}_m{m}"]
        if k >= 1800:
            # gate and up rounded as the GEMV rounds them, then silu_and_mul's formula
            assert torch.equal(act, ops.silu_and_mul(gate_up))
        ref = normed.double() @ w.double().T + (0 if b is None else b.double())
        gate, up = ref.chunk(2, dim=-1)
        torch.testing.assert_close(act.double(), torch.nn.functional.silu(gate) * up, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k", [(6144, 4096), (28672, 4096), (100, 4104), (7, 64)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_linear(dtype, n, k, with_residual):
    w, b = _weights(n, k, dtype, with_bias=n == 100, seed=4)
    norm_w = _randn(k, dtype=dtype, seed=40, scale=0.5) + 1
    sfx = driver.dtype_suffix(dtype)
    for m in ROWS:
        x = _randn(m, k, dtype=dtype, seed=41 + m, scale=2.0)
        residual = _randn(m, k, dtype=dtype, seed=51 + m) if with_residual else None
        poison_allocator()
        with launches() as names:
            out, summed = ops.rms_norm_linear(x, residual, norm_w, 1e-5, w, b)
        if residual is None:
            normed, expected_sum = ops.rms_norm(x, norm_w, 1e-5), x
        else:
            normed, expected_sum = ops.add_rms_norm(x, residual, norm_w, 1e-5)
        unfused = ops.linear(normed, w, b)
        assert torch.equal(summed, expected_sum)
        if m > gemv.MAX_ROWS:
            assert names == [f"rms_norm_{sfx}"] and torch.equal(out, unfused)  # norm kernel, then torch
            continue
        assert names == [f"rms_norm_gemv_{sfx}_m{m}"]
        if k >= 1800:  # the norm kernel then reduces over 256 threads as the fused one does
            assert torch.equal(out, unfused)
        _assert_near_fp64(out, normed, w, b, dtype)


def _cos_sin(max_pos: int, head_dim: int) -> torch.Tensor:
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float32), inv_freq)  # [max_pos, D/2]
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1).cuda()  # [max_pos, D]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hq, hkv, d, k", [(32, 8, 128, 4096), (4, 2, 64, 256), (3, 1, 64, 4104), (2, 2, 16, 64)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_rope_store_kv(dtype, hq, hkv, d, k, with_bias, with_residual):
    """The fused qkv GEMV + rope + cache write equals rms_norm_linear, then rope_store_kv, bit
    for bit (q, the cache, the residual sum); padding rows (slot -1) store nothing."""
    w, b = _weights((hq + 2 * hkv) * d, k, dtype, with_bias, seed=7)
    norm_w = _randn(k, dtype=dtype, seed=70, scale=0.5) + 1
    cos_sin = _cos_sin(64, d)
    sfx = driver.dtype_suffix(dtype)
    for m in ROWS:
        x = _randn(m, k, dtype=dtype, seed=71 + m, scale=2.0)
        residual = _randn(m, k, dtype=dtype, seed=81 + m) if with_residual else None
        positions = torch.tensor([(5 + 7 * i) % 64 for i in range(m)], device="cuda")
        slots = torch.tensor([3 + 9 * i if i != 1 else -1 for i in range(m)], device="cuda")  # row 1 pads
        caches = [_randn(4, 16, hkv, d, dtype=dtype, seed=90 + i) for i in range(2)]
        expected_caches = [c.clone() for c in caches]
        poison_allocator()
        with launches() as names:
            q, summed = ops.rms_norm_rope_store_kv(x, residual, norm_w, 1e-5, w, b, hq, hkv, positions, cos_sin,
                                                   *caches, slots)
        qkv, expected_sum = ops.rms_norm_linear(x, residual, norm_w, 1e-5, w, b)
        qv, kv, vv = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)
        expected_q = ops.rope_store_kv(qv.view(m, hq, d), kv.view(m, hkv, d), vv.view(m, hkv, d), positions,
                                       cos_sin, *expected_caches, slots)
        if m <= gemv.MAX_ROWS:
            assert names == [f"rms_norm_rope_gemv_{sfx}_m{m}"]
        else:
            assert f"rms_norm_rope_gemv_{sfx}_m{m}" not in names
        assert q.shape == (m, hq, d) and torch.equal(summed, expected_sum)
        assert torch.equal(q, expected_q)  # (rms_norm_linear stages x as the fused kernel does)
        assert torch.equal(caches[0], expected_caches[0]) and torch.equal(caches[1], expected_caches[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_leading_dims_and_strided_inputs(dtype):
    n, k = 300, 4096
    w, b = _weights(n, k, dtype, True, seed=3)
    base = _randn(2, 1, k, dtype=dtype, seed=30)
    expected = ops.linear(base.view(2, k), w, b)
    buf = _randn(2, k + 16, dtype=dtype, seed=31)
    buf[:, 8 : k + 8] = base.view(2, k)
    misaligned = _randn(2, k + 16, dtype=dtype, seed=32)
    misaligned[:, 1 : k + 1] = base.view(2, k)
    transposed = base.view(2, k).t().contiguous().t()  # K-major: stride(-1) != 1
    for x in (base, buf[:, 8 : k + 8], misaligned[:, 1 : k + 1], transposed):
        with launches() as names:
            out = ops.linear(x, w, b)
        assert names == [f"gemv_{driver.dtype_suffix(dtype)}_m2"]
        assert out.shape == (*x.shape[:-1], n)
        assert torch.equal(out.reshape(2, n), expected)


def test_vector_input():
    w, b = _weights(50, 64, torch.bfloat16, True)
    x = _randn(64, dtype=torch.bfloat16, seed=40)
    with launches() as names:
        out = ops.linear(x, w, b)
    assert names == ["gemv_bf16_m1"] and out.shape == (50,)
    assert torch.equal(out, ops.linear(x[None], w, b)[0])


@pytest.mark.parametrize("resident", [1, 3, 17])
def test_result_does_not_depend_on_the_grid(monkeypatch, resident):
    """Fewer resident CTAs -> more rows per warp (the grid-stride loop and the prefetch of
    the next row's first chunk); every row is still summed in the same order."""
    w, b = _weights(1001, 4104, torch.bfloat16, True, seed=5)
    x = _randn(2, 4104, dtype=torch.bfloat16, seed=50)
    norm_w = _randn(4104, dtype=torch.bfloat16, seed=51)
    gated = w[:1000]  # [2 * 500, K]
    expected = ops.linear(x, w, b), ops.rms_norm_gated_linear(x, x, norm_w, 1e-5, gated, b[:1000])[0]
    monkeypatch.setattr(gemv, "_resident_ctas", lambda device, kernel, shared_mem: resident)
    poison_allocator()
    assert torch.equal(ops.linear(x, w, b), expected[0])
    assert torch.equal(ops.rms_norm_gated_linear(x, x, norm_w, 1e-5, gated, b[:1000])[0], expected[1])


def test_weight_layouts_the_kernel_refuses_fall_back():
    w, _ = _weights(64, 256, torch.float16, False, seed=6)
    x = _randn(2, 256, dtype=torch.float16, seed=60)
    transposed = w.t().contiguous().t()
    flat = torch.empty(64 * 256 + 8, dtype=torch.float16, device="cuda")
    misaligned = flat[1 : 1 + 64 * 256].view(64, 256)
    misaligned.copy_(w)
    odd_k = _randn(64, 252, dtype=torch.float16, seed=61)
    cases = [(x, transposed), (x, misaligned), (x[:, :252], odd_k)]
    for xi, wi in cases:
        with launches() as names:
            out = ops.linear(xi, wi)
        assert names == []
        assert torch.equal(out, F.linear(xi, wi))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_graph_replay(dtype):
    n, k = 4096, 4096
    w, b = _weights(n, k, dtype, True, seed=7)
    w_gate_up, _ = _weights(2 * n, k, dtype, False, seed=8)
    norm_w = _randn(k, dtype=dtype, seed=9)
    x = _randn(1, k, dtype=dtype, seed=70)
    residual = _randn(1, k, dtype=dtype, seed=71)
    run = lambda: (ops.linear(x, w, b), *ops.rms_norm_gated_linear(x, residual, norm_w, 1e-5, w_gate_up))
    run()  # load modules, opt in to the shared memory
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = run()
    for seed in (72, 73):
        x.copy_(_randn(1, k, dtype=dtype, seed=seed))
        residual.copy_(_randn(1, k, dtype=dtype, seed=seed + 10))
        graph.replay()
        torch.cuda.synchronize()
        for got, expected in zip(outs, run()):
            assert torch.equal(got, expected)
        _assert_near_fp64(outs[0], x, w, b, dtype)


def test_get_op_serves_the_gemv_ops():
    from lmdeploy_sdk import native

    assert native.get_op("linear", torch.bfloat16) is gemv.linear
    assert native.get_op("rms_norm_linear", torch.float16) is gemv.rms_norm_linear
    assert native.get_op("rms_norm_gated_linear", torch.float16) is gemv.rms_norm_gated_linear
