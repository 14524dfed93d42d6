"""The W4A16 kernels (native/int4_gemm.py) against the reference (dequantize + matmul in
fp64): every token-tile build and the dequantize + cuBLAS path past them (M 1..4096),
every group size, ragged and odd shapes, the Llama-3-8B and 70B projections, the fused norm / SiLU / rope epilogues, split-K determinism and
CUDA-graph replay. Outputs are poisoned first, so an element a kernel forgets shows."""
from __future__ import annotations

import pytest
import torch

from lmdeploy_sdk import ops
from lmdeploy_sdk.native import driver, int4_gemm
from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.quant.int4 import Int4Weight, RowsInt4, pack_nibbles
from native_attention_cases import poison_allocator, recorded_launches as launches

pytestmark = pytest.mark.gpu

DTYPES = [torch.bfloat16, torch.float16]
GROUPS = [32, 64, 128, 256]
# (N, K): tiny, N not a multiple of 16, K a multiple of 32 but not of 64 (padded chunk),
# and the Llama-3-8B projections (qkv, o, gate_up, down)
SHAPES = [(16, 256), (40, 96), (100, 4128), (6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]
SHAPES_70B = [(10240, 8192), (8192, 8192), (57344, 8192), (8192, 28672)]
ROWS = [1, 2, 3, 8, 9, 16, 17, 33, 64, 300, 1024, 4096]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator(device="cuda").manual_seed(seed)


def random_int4(n: int, k: int, group: int, dtype: torch.dtype, seed: int = 0) -> Int4Weight:
    """Random q, scales around k^-0.5 / 4.6 (outputs of order 1) and mins near -7.5 s."""
    g = _gen(seed)
    q = torch.randint(0, 16, (n, k), generator=g, device="cuda", dtype=torch.uint8)
    s = (torch.rand(n, k // group, generator=g, device="cuda") + 0.5) * (k**-0.5 / 4.6)
    m = -s * (7.5 + torch.randn(n, k // group, generator=g, device="cuda"))
    return Int4Weight.from_rows(RowsInt4(pack_nibbles(q), s, m), dtype)


def _randn(*shape, dtype, seed, scale=1.0):
    return (torch.randn(shape, generator=_gen(seed), device="cuda") * scale).to(dtype)


def _assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, loose: float = 1.0) -> None:
    assert torch.isfinite(out).all(), "unwritten (NaN-poisoned) or overflowing outputs"
    eps = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    err = (out.double() - ref).norm() / ref.norm()
    assert err < 2 * eps * loose, f"relative error {err:.2e}"
    torch.testing.assert_close(out.double(), ref, rtol=4 * eps * loose, atol=8 * eps * loose * ref.abs().max().item())


def _expected_kernel(rows: int, dtype: torch.dtype, kind: str = "int4_gemm") -> str:
    sfx = driver.dtype_suffix(dtype)
    if rows > int4_gemm.MAX_TOKENS:
        return f"int4_dequant_{sfx}"
    return f"{kind}_{sfx}_m{int4_gemm.token_tiles(rows)}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group", GROUPS)
def test_dequantize_kernel_equals_reference(dtype, group):
    w = random_int4(100, 4096 + (32 if group == 32 else 0), group, dtype, seed=group)
    poison_allocator()
    ours = int4_gemm.dequantize(w)
    ref = w.dequantize()  # q * s + m in fp32, rounded once
    assert torch.isfinite(ours).all()
    # one fma in T against fp32 then T: equal but for rare double-rounding ties
    assert (ours != ref).float().mean() < 1e-3
    torch.testing.assert_close(ours, ref, rtol=2.0**-7, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k", SHAPES)
@pytest.mark.parametrize("group", [32, 128])
def test_linear_matches_reference(dtype, n, k, group):
    if k % group:
        pytest.skip("group does not divide K")
    w = random_int4(n, k, group, dtype, seed=n + k)
    w_ref = w.dequantize().double()
    bias = _randn(n, dtype=dtype, seed=3) if n == 100 else None
    for rows in ROWS:
        x = _randn(rows, k, dtype=dtype, seed=rows)
        poison_allocator()
        with launches() as names:
            out = ops.linear(x, w, bias)
        assert names == [_expected_kernel(rows, dtype)], names
        ref = x.double() @ w_ref.T + (0 if bias is None else bias.double())
        _assert_close(out, ref, dtype)


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_size_and_token_tile(group):
    dtype = torch.bfloat16
    w = random_int4(4096, 4096, group, dtype, seed=group)
    w_ref = w.dequantize().double()
    for rows in (1, 5, 12, 16):
        x = _randn(rows, 4096, dtype=dtype, seed=100 + rows)
        _assert_close(ops.linear(x, w), x.double() @ w_ref.T, dtype)


@pytest.mark.parametrize("n, k", SHAPES_70B)
def test_llama_70b_projections(n, k):
    dtype = torch.bfloat16
    w = random_int4(n, k, 128, dtype, seed=7)
    w_ref = w.dequantize().double()
    for rows in (1, 4, 16, 65):
        x = _randn(rows, k, dtype=dtype, seed=rows)
        _assert_close(ops.linear(x, w), x.double() @ w_ref.T, dtype)


def test_strided_rows_and_3d_inputs():
    dtype = torch.bfloat16
    w = random_int4(256, 512, 64, dtype)
    w_ref = w.dequantize().double()
    wide = _randn(5, 1024, dtype=dtype, seed=1)
    x = wide[:, 256:768]  # rows 1024 apart
    _assert_close(ops.linear(x, w), x.double() @ w_ref.T, dtype)
    x3 = _randn(2, 3, 512, dtype=dtype, seed=2)
    out = ops.linear(x3, w)
    assert out.shape == (2, 3, 256)
    _assert_close(out, x3.double() @ w_ref.T, dtype)


def test_split_k_is_deterministic_and_resets_its_counters():
    dtype = torch.bfloat16
    w = random_int4(4096, 14336, 128, dtype)  # 7 K slices at 1 row
    x = _randn(3, 14336, dtype=dtype, seed=5)
    first = ops.linear(x, w)
    for _ in range(5):
        assert torch.equal(ops.linear(x, w), first)
    torch.cuda.synchronize()
    assert int(int4_gemm._counters(torch.cuda.current_device()).abs().sum()) == 0


def test_cuda_graph_replay_matches_eager():
    dtype = torch.bfloat16
    w = random_int4(6144, 4096, 128, dtype)
    x = _randn(2, 4096, dtype=dtype, seed=6)
    ops.linear(x, w)  # load the module, allocate the counters
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ops.linear(x, w)
    for seed in range(3):
        x.copy_(_randn(2, 4096, dtype=dtype, seed=seed))
        graph.replay()
        assert torch.equal(out, ops.linear(x, w))


def _norm_inputs(rows, k, dtype, with_residual, seed=0):
    x = _randn(rows, k, dtype=dtype, seed=seed, scale=2.0)
    residual = _randn(rows, k, dtype=dtype, seed=seed + 1) if with_residual else None
    norm_w = _randn(k, dtype=dtype, seed=seed + 2, scale=0.5) + 1
    return x, residual, norm_w


def _normed64(x, residual, norm_w, eps=1e-5):
    summed = x if residual is None else x + residual  # rounded to T, as the ops do
    s = summed.double()
    return s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps) * norm_w.double(), summed


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("n, k", [(6144, 4096), (100, 4128), (576, 576)])
def test_rms_norm_linear(dtype, with_residual, n, k):
    w = random_int4(n, k, 32 if k % 64 else 64, dtype, seed=9)
    w_ref = w.dequantize().double()
    for rows in (1, 2, 16, 33, 64, 65):
        x, residual, norm_w = _norm_inputs(rows, k, dtype, with_residual, seed=rows)
        poison_allocator()
        with launches() as names:
            out, summed = ops.rms_norm_linear(x, residual, norm_w, 1e-5, w)
        normed, expected_sum = _normed64(x, residual, norm_w)
        assert torch.equal(summed, expected_sum)
        if rows <= int4_gemm.MAX_TOKENS:
            assert names == [_expected_kernel(rows, dtype, "rms_norm_int4_gemm")], names
        _assert_close(out, normed @ w_ref.T, dtype, loose=2.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("i, k", [(14336, 4096), (1536, 576), (40, 256)])
def test_rms_norm_gated_linear(dtype, i, k):
    w = random_int4(2 * i, k, 64, dtype, seed=11)  # [gate | up]
    w_ref = w.dequantize().double()
    for rows in (1, 3, 16, 40):
        x, residual, norm_w = _norm_inputs(rows, k, dtype, True, seed=20 + rows)
        poison_allocator()
        with launches() as names:
            act, summed = ops.rms_norm_gated_linear(x, residual, norm_w, 1e-5, w)
        normed, expected_sum = _normed64(x, residual, norm_w)
        assert torch.equal(summed, expected_sum) and act.shape == (rows, i)
        if i % 16 == 0 and rows <= int4_gemm.MAX_TOKENS:
            assert names == [_expected_kernel(rows, dtype, "rms_norm_gated_int4_gemm")], names
        gate, up = (normed @ w_ref.T).chunk(2, dim=-1)
        _assert_close(act, torch.nn.functional.silu(gate) * up, dtype, loose=3.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hq, hkv, d", [(32, 8, 128), (9, 3, 64), (4, 4, 64)])
def test_rms_norm_rope_store_kv(dtype, hq, hkv, d):
    k = 512
    n = (hq + 2 * hkv) * d
    w = random_int4(n, k, 128, dtype, seed=13)
    blocks, block_size = 6, 16
    cos_sin = torch.cat([torch.cos(a := torch.rand(256, d // 2, device="cuda") * 6), torch.sin(a)], dim=1)
    for rows in (2, 3, 16, 40):  # row 0 is padding (slot -1); the reference runs the rest
        x, residual, norm_w = _norm_inputs(rows, k, dtype, True, seed=30 + rows)
        positions = torch.randint(0, 256, (rows,), device="cuda")
        slots = torch.randperm(blocks * block_size, device="cuda")[:rows]
        slots[0] = -1  # a padding row: nothing stored
        caches = [_randn(blocks, block_size, hkv, d, dtype=dtype, seed=40 + i) for i in range(2)]
        ours_caches = [c.clone() for c in caches]
        poison_allocator()
        with launches() as names:
            q, summed = ops.rms_norm_rope_store_kv(x, residual, norm_w, 1e-5, w, None, hq, hkv, positions, cos_sin,
                                                   *ours_caches, slots)
        if rows <= int4_gemm.MAX_TOKENS:
            assert names == [_expected_kernel(rows, dtype, "rms_norm_rope_int4_gemm")], names
        assert torch.equal(summed, x + residual)
        # the reference in fp32 on the rows that store (it has no padding rows)
        w32 = Int4Weight(w.qweight, w.scale_min.float(), n, k, 128)
        ref_caches = [c.float() for c in caches]
        q_ref, _ = reference.rms_norm_rope_store_kv(
            x[1:].float(), residual[1:].float(), norm_w.float(), 1e-5, w32, None, hq, hkv, positions[1:], cos_sin,
            *ref_caches, slots[1:])
        _assert_close(q[1:], q_ref.double(), dtype, loose=3.0)
        for ours, ref, before in zip(ours_caches, ref_caches, caches):
            written = slots[slots >= 0]
            flat = ours.view(-1, hkv, d)
            untouched = torch.ones(flat.shape[0], dtype=torch.bool, device="cuda")
            untouched[written] = False
            assert torch.equal(flat[untouched], before.view(-1, hkv, d)[untouched])
            _assert_close(flat[written], ref.view(-1, hkv, d)[written].double(), dtype, loose=3.0)
