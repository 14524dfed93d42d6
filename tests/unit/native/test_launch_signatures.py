"""Every host wrapper's launch matches its kernel's PTX signature (checked without a GPU).

driver.launch is replaced by a recorder; each wrapper runs on CPU tensors and the
recorded kernel name, argument sizes/kinds and block size are checked against the
`.entry` declarations parsed from the committed PTX.
"""
from __future__ import annotations

import ctypes
import functools
import re

import pytest
import torch

from lmdeploy_sdk import native
from lmdeploy_sdk.native import activation, argmax, build, driver, gemv, int4_gemm, kv_cache, norm, rope
from lmdeploy_sdk.native import paged_attention as native_attention
from lmdeploy_sdk.ops.metadata import AttentionMetadata
from lmdeploy_sdk.quant.int4 import Int4Weight, RowsInt4

ENTRY = re.compile(r"\.visible \.entry (\w+)\((.*?)\)\s*\.maxntid (\d+), (\d+), (\d+)", re.S)
PARAM = re.compile(r"\.param \.(\w+) \w+")
H100_SMEM = (227 * 1024, 228 * 1024)  # (opt-in bytes per CTA, bytes per SM)
PTX_TYPES = {"u64": (8, "int"), "s64": (8, "int"), "u32": (4, "int"), "s32": (4, "int"), "f32": (4, "float")}


@functools.cache
def _entries(module: str, subdir: str = "") -> dict[str, tuple[list[str], int]]:
    text = (build.PTX_DIR / subdir / f"{module}.ptx").read_text()
    return {m[1]: (PARAM.findall(m[2]), int(m[3])) for m in ENTRY.finditer(text)}


@pytest.mark.parametrize("module", native.PTX_MODULES)
def test_both_builds_declare_the_same_kernels(module):
    """The wrappers check launches against ptx/; the compute_90 build must match it."""
    assert _entries(module, "sm90") == _entries(module)


class Recorder:
    def __init__(self) -> None:
        self.kernels: list[str] = []

    def __call__(self, device, module, kernel, grid, block, args, shared_mem=0) -> None:
        entries = _entries(module, driver.SM90A_PTX_SUBDIR if driver.is_sm90a_module(module) else "")
        assert kernel in entries, f"{kernel} not in {module}.ptx"
        params, max_threads = entries[kernel]
        assert len(args) == len(params), f"{kernel}: {len(args)} args for {len(params)} params"
        for i, (arg, ptx_type) in enumerate(zip(args, params)):
            size, kind = PTX_TYPES[ptx_type]
            assert ctypes.sizeof(arg) == size, f"{kernel} param {i}: {type(arg).__name__} vs .{ptx_type}"
            assert isinstance(arg, ctypes.c_float) == (kind == "float"), f"{kernel} param {i}"
        assert all(g > 0 for g in grid) and 0 < block[0] <= max_threads, f"{kernel}: grid {grid} block {block}"
        assert 0 <= shared_mem <= H100_SMEM[0], f"{kernel}: {shared_mem} bytes of shared memory"
        self.kernels.append(kernel)


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(driver, "launch", rec)
    monkeypatch.setattr(driver, "sm_count", lambda index: 132)
    monkeypatch.setattr(driver, "smem_limits", lambda index: H100_SMEM)
    monkeypatch.setattr(driver, "device_index", lambda device: 0)
    monkeypatch.setattr(driver, "device_capability", lambda index: (8, 0))  # an A100: no sm_90a kernels
    return rec


def _meta(q_lens: list[int], kv_lens: list[int], block_size: int) -> AttentionMetadata:
    max_blocks = -(-max(kv_lens) // block_size)
    return AttentionMetadata(
        cu_seqlens_q=torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32),
        kv_lens=torch.tensor(kv_lens, dtype=torch.int32),
        block_tables=torch.zeros((len(q_lens), max_blocks), dtype=torch.int32),
        slot_mapping=torch.zeros(sum(q_lens), dtype=torch.int64),
        q_lens_cpu=q_lens,
        kv_lens_cpu=kv_lens,
        max_q_len=max(q_lens),
        max_kv_len=max(kv_lens),
        block_size=block_size,
    )


@pytest.mark.parametrize("dtype, sfx", [(torch.float16, "f16"), (torch.bfloat16, "bf16")])
def test_small_op_launches(recorder, dtype, sfx):
    x = torch.randn(4, 4096, dtype=dtype)
    w = torch.randn(4096, dtype=dtype)
    norm.rms_norm(x, w, 1e-6)
    norm.add_rms_norm(x, x, w, 1e-6)
    q, k = torch.randn(3, 8, 128, dtype=dtype), torch.randn(3, 2, 128, dtype=dtype)
    rope.apply_rope(q, k, torch.tensor([0, 5, 9]), torch.randn(16, 128))
    activation.silu_and_mul(torch.randn(3, 2 * 1376, dtype=dtype))
    kv_cache.store_kv(k, k, torch.zeros(4, 16, 2, 128, dtype=dtype), torch.zeros(4, 16, 2, 128, dtype=dtype),
                      torch.tensor([1, 2, 3]))
    rope.rope_store_kv(q, k, k, torch.tensor([0, 5, 9]), torch.randn(16, 128),
                       torch.zeros(4, 16, 2, 128, dtype=dtype), torch.zeros(4, 16, 2, 128, dtype=dtype),
                       torch.tensor([1, 2, 3]))
    assert recorder.kernels == [f"rms_norm_{sfx}", f"rms_norm_{sfx}", f"apply_rope_{sfx}",
                                f"silu_and_mul_{sfx}", f"store_kv_{sfx}", f"rope_store_kv_{sfx}"]


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("hq, hkv", [(8, 8), (32, 8), (28, 4), (64, 2)])
def test_attention_launches(recorder, head_dim, hq, hkv):
    caches = [torch.zeros(8, 16, hkv, head_dim, dtype=torch.bfloat16) for _ in range(2)]
    decode_q = torch.randn(3, hq, head_dim, dtype=torch.bfloat16)
    native_attention.paged_attention(decode_q, *caches, _meta([1, 1, 1], [5, 16, 40], 16), 0.1)
    native_attention.paged_decode(decode_q, *caches, _meta([1, 1, 1], [5, 16, 40], 16), 0.1, num_splits=4)
    prefill_q = torch.randn(12, hq, head_dim, dtype=torch.bfloat16)
    native_attention.paged_attention(prefill_q, *caches, _meta([2, 10], [30, 10], 16), 0.1)
    d = f"bf16_d{head_dim}"
    assert recorder.kernels == [
        f"paged_decode_{d}_s3",
        f"paged_decode_{d}_s3",
        f"paged_decode_reduce_{d}",
        f"paged_prefill_{d}",
    ]


@pytest.mark.parametrize("dtype, sfx", [(torch.float16, "f16"), (torch.bfloat16, "bf16")])
def test_gemv_launches(recorder, monkeypatch, dtype, sfx):
    monkeypatch.setattr(gemv, "_smem_limit", lambda device: driver.DEFAULT_SMEM_LIMIT)
    monkeypatch.setattr(gemv, "_resident_ctas", lambda device, kernel, shared_mem: 4 * 132)
    w, b = torch.randn(100, 64, dtype=dtype), torch.randn(100, dtype=dtype)
    norm_w = torch.randn(64, dtype=dtype)
    for m in range(1, gemv.MAX_ROWS + 1):
        gemv.linear(torch.randn(m, 64, dtype=dtype), w, b)
        x = torch.randn(m, 64, dtype=dtype)
        gemv.rms_norm_linear(x, None, norm_w, 1e-5, w, b)
        gemv.rms_norm_linear(x, x.clone(), norm_w, 1e-5, w)
        gemv.rms_norm_gated_linear(x, x.clone(), norm_w, 1e-5, w, b)
        caches = [torch.zeros(4, 16, 2, 16, dtype=dtype) for _ in range(2)]  # Hkv 2, D 16: qkv rows 100
        gemv.rms_norm_rope_store_kv(x, x.clone(), norm_w, 1e-5, w[:96], b[:96], 2, 2, torch.arange(m),
                                    torch.randn(8, 16), *caches, torch.arange(m))
    kinds = ("gemv", "rms_norm_gemv", "rms_norm_gemv", "rms_norm_gated_gemv", "rms_norm_rope_gemv")
    assert recorder.kernels == [f"{kind}_{sfx}_m{m}" for m in range(1, gemv.MAX_ROWS + 1) for kind in kinds]


@pytest.mark.parametrize("dtype, sfx", [(torch.float16, "f16"), (torch.bfloat16, "bf16")])
def test_argmax_launches(recorder, dtype, sfx):
    argmax.argmax(torch.randn(2, 128256).to(dtype))  # split rows, then merged
    argmax.argmax(torch.randn(600, 50257).to(dtype))  # one CTA a row; odd vocabulary
    assert recorder.kernels == [f"argmax_partial_vec_{sfx}", "argmax_final", f"argmax_partial_{sfx}"]


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("dtype, sfx", [(torch.float16, "f16"), (torch.bfloat16, "bf16")])
@pytest.mark.parametrize("capability, disabled, wgmma", [((9, 0), None, True), ((9, 0), "1", False),
                                                          ((8, 0), None, False), ((10, 0), None, False)])
def test_prefill_runs_the_wgmma_kernel_on_sm90_only(recorder, monkeypatch, head_dim, dtype, sfx, capability,
                                                    disabled, wgmma):
    """H100/H200 get paged_prefill_wgmma_* (ptx/sm90a), unless LMDEPLOY_SDK_DISABLE_WGMMA=1; every other
    GPU, later ones included, the mma.sync kernel."""
    monkeypatch.setattr(driver, "device_capability", lambda index: capability)
    if disabled is None:
        monkeypatch.delenv(driver.DISABLE_SM90A_ENV, raising=False)
    else:
        monkeypatch.setenv(driver.DISABLE_SM90A_ENV, disabled)
    caches = [torch.zeros(8, 16, 4, head_dim, dtype=dtype) for _ in range(2)]
    native_attention.paged_prefill(torch.randn(140, 16, head_dim, dtype=dtype), *caches,
                                   _meta([130, 10], [130, 40], 16), 0.1)
    expected = f"paged_prefill_wgmma_{sfx}_d{head_dim}" if wgmma else f"paged_prefill_{sfx}_d{head_dim}"
    assert recorder.kernels == [expected]


def test_prompts_of_one_query_tile_stay_on_the_mma_sync_kernel(recorder, monkeypatch):
    monkeypatch.setattr(driver, "device_capability", lambda index: (9, 0))
    monkeypatch.delenv(driver.DISABLE_SM90A_ENV, raising=False)
    caches = [torch.zeros(40, 16, 4, 128, dtype=torch.bfloat16) for _ in range(2)]
    longest = native_attention.WGMMA_MIN_Q_LEN
    for q_lens in ([longest - 1, 5], [longest, 5]):
        q = torch.randn(sum(q_lens), 16, 128, dtype=torch.bfloat16)
        native_attention.paged_prefill(q, *caches, _meta(q_lens, [300, 5], 16), 0.1)
    assert recorder.kernels == ["paged_prefill_bf16_d128", "paged_prefill_wgmma_bf16_d128"]


def test_prefill_kernel_can_be_forced(recorder, monkeypatch):
    caches = [torch.zeros(40, 16, 4, 128, dtype=torch.bfloat16) for _ in range(2)]
    q, meta = torch.randn(305, 16, 128, dtype=torch.bfloat16), _meta([300, 5], [300, 5], 16)
    monkeypatch.setattr(driver, "device_capability", lambda index: (9, 0))
    native_attention.paged_prefill(q, *caches, meta, 0.1, kernel="mma_sync")
    native_attention.paged_prefill(torch.randn(6, 16, 128, dtype=torch.bfloat16), *caches,
                                   _meta([1, 5], [300, 5], 16), 0.1, kernel="wgmma")
    assert recorder.kernels == ["paged_prefill_bf16_d128", "paged_prefill_wgmma_bf16_d128"]
    with pytest.raises(ValueError, match="'fast'"):
        native_attention.paged_prefill(q, *caches, meta, 0.1, kernel="fast")
    monkeypatch.setattr(driver, "device_capability", lambda index: (8, 9))
    with pytest.raises(ValueError, match=r"compute capability 9.0 .*\(8, 9\)"):
        native_attention.paged_prefill(q, *caches, meta, 0.1, kernel="wgmma")


@pytest.mark.parametrize("head_dim", [64, 128])
def test_wgmma_prefill_smem_fits_an_h100_cta(head_dim):
    threads = _entries(native_attention.WGMMA_PREFILL_MODULE, "sm90a")[f"paged_prefill_wgmma_bf16_d{head_dim}"][1]
    assert threads == native_attention.WGMMA_PREFILL_THREADS
    assert native_attention.wgmma_prefill_smem(head_dim, 2) <= H100_SMEM[0]


def _int4(n: int, k: int, group: int, dtype: torch.dtype) -> Int4Weight:
    rows = RowsInt4(torch.zeros(n, k // 8, dtype=torch.int32), torch.ones(n, k // group), torch.zeros(n, k // group))
    return Int4Weight.from_rows(rows, dtype)


@pytest.mark.parametrize("dtype, sfx", [(torch.float16, "f16"), (torch.bfloat16, "bf16")])
def test_int4_launches(recorder, monkeypatch, dtype, sfx):
    """Through gemv's entry points (the ops' native table), a 4-bit weight runs the int4
    kernels: the smallest token-tile build up to 16 rows, dequantize + torch past that."""
    monkeypatch.setattr(int4_gemm, "_counters", lambda index: torch.zeros(int4_gemm.COUNTER_SLOTS, dtype=torch.int32))

    class Kernels:  # one resident CTA an SM
        def max_active_blocks(self, module, kernel, threads, shared_mem):
            assert shared_mem <= H100_SMEM[0]
            return 1

    monkeypatch.setattr(driver, "device_kernels", lambda index: Kernels())
    k, hq, hkv, d = 4096, 4, 2, 128
    qkv, gate_up = _int4((hq + 2 * hkv) * d, k, 128, dtype), _int4(2 * 1536, k, 32, dtype)
    norm_w = torch.randn(k, dtype=dtype)
    expected = []
    for m in (1, 8, 9, 16, 17, 64):
        x = torch.randn(m, k, dtype=dtype)
        caches = [torch.zeros(4, 16, hkv, d, dtype=dtype) for _ in range(2)]
        gemv.linear(x, qkv)
        gemv.rms_norm_linear(x, x.clone(), norm_w, 1e-5, qkv)
        gemv.rms_norm_gated_linear(x, None, norm_w, 1e-5, gate_up)
        gemv.rms_norm_rope_store_kv(x, x.clone(), norm_w, 1e-5, qkv, None, hq, hkv, torch.arange(m) % 8,
                                    torch.randn(8, d), *caches, torch.arange(m))
        if m > int4_gemm.MAX_TOKENS:  # norm kernels, then dequantize (+ torch), activation / rope kernels
            expected += [f"int4_dequant_{sfx}", f"rms_norm_{sfx}", f"int4_dequant_{sfx}", f"rms_norm_{sfx}",
                         f"int4_dequant_{sfx}", f"silu_and_mul_{sfx}", f"rms_norm_{sfx}", f"int4_dequant_{sfx}",
                         f"rope_store_kv_{sfx}"]
            continue
        mt = int4_gemm.token_tiles(m)
        expected += [f"{kind}_{sfx}_m{mt}" for kind in ("int4_gemm", "rms_norm_int4_gemm", "rms_norm_gated_int4_gemm",
                                                         "rms_norm_rope_int4_gemm")]
    assert recorder.kernels == expected


def test_int4_token_tiles_and_cta_shapes():
    assert [int4_gemm.token_tiles(m) for m in (1, 8, 9, 16)] == [1, 1, 2, 2]
    assert int4_gemm.MAX_TOKENS == 16
    for mt in int4_gemm.TOKEN_TILES:
        cta = int4_gemm.shape(mt)
        # an item is every warp's LOADS vectors: (row tiles x K slice / 64) == warps x LOADS
        assert cta.row_tiles * cta.k_slice // 64 == cta.warps * int4_gemm.LOADS
        assert cta.threads == _entries(int4_gemm.MODULE)[f"int4_gemm_bf16_m{mt}"][1]
        assert cta.shared_mem(mt) <= H100_SMEM[0]
    assert int4_gemm.shape(1).k_slice == 4096  # Llama-3-8B's hidden size is one slice up to 16 tokens
