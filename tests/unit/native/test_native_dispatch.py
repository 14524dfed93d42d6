"""get_op's contract on machines without a usable GPU, and the host-side helpers."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lmdeploy_sdk import native, ops
from lmdeploy_sdk.native import driver, layout
from lmdeploy_sdk.native import paged_attention as native_attention


@pytest.fixture
def fresh_availability():
    native.native_available.cache_clear()
    yield
    native.native_available.cache_clear()


def test_cpu_tensors_never_reach_native():
    x = torch.randn(3, 16)
    assert ops._native("rms_norm", x) is None
    torch.testing.assert_close(ops.rms_norm(x, torch.ones(16), 1e-6), ops.reference.rms_norm(x, torch.ones(16), 1e-6))


def test_no_cuda_means_no_op(monkeypatch, fresh_availability):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in native.OP_NAMES:
        assert native.get_op(name, torch.bfloat16) is None


def test_no_cuda_python_means_no_op(monkeypatch, fresh_availability):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(native, "cuda_bindings_available", lambda: False)
    assert native.get_op("paged_attention", torch.float16) is None


def test_old_gpu_means_no_op(monkeypatch, fresh_availability):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(native, "cuda_bindings_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (7, 5))
    assert native.get_op("rms_norm", torch.float16) is None


def test_float32_has_no_kernel(monkeypatch, fresh_availability):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(native, "cuda_bindings_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (9, 0))
    assert native.get_op("rms_norm", torch.float32) is None
    assert callable(native.get_op("rms_norm", torch.bfloat16))


def test_unknown_op_name_is_an_error():
    with pytest.raises(ValueError, match="'flash_mla'"):
        native.get_op("flash_mla", torch.float16)


def test_imports_without_cuda_python():
    # Block `cuda` entirely, as on a machine without cuda-bindings installed.
    code = (
        "import sys; sys.modules['cuda'] = None\n"
        "import torch\n"
        "from lmdeploy_sdk import native\n"
        "from lmdeploy_sdk.native import driver\n"
        "assert not driver.cuda_bindings_available()\n"
        "assert native.get_op('rms_norm', torch.float16) is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dtype_suffix_rejects_other_dtypes():
    assert driver.dtype_suffix(torch.bfloat16) == "bf16"
    with pytest.raises(ValueError, match="float32"):
        driver.dtype_suffix(torch.float32)


@pytest.mark.parametrize("size, shift", [(16, 4), (64, 6), (1, 0), (24, -1), (48, -1)])
def test_block_shift(size, shift):
    assert layout.block_shift(size) == shift


def test_vec8_ready():
    base = torch.zeros(4, 48)
    assert layout.vec8_ready(base)
    assert layout.vec8_ready(base[:, 8:24])  # row stride 48, offset 32 bytes
    assert not layout.vec8_ready(base[:, 1:17])  # base pointer off by 4 bytes
    assert not layout.vec8_ready(base.t())
    assert layout.vec8_ready(layout.as_vec8(base[:, 1:17]))


@pytest.mark.parametrize("group, expected", [(1, 1), (4, 4), (7, 7), (12, 12), (16, 16), (32, 16), (24, 12), (17, 1)])
def test_decode_heads(group, expected):
    assert native_attention.decode_heads(group) == expected


@pytest.mark.parametrize(
    "gpu, smem, expected",
    [("H100", (227 << 10, 228 << 10), {64: 3, 128: 3}), ("A100", (163 << 10, 164 << 10), {64: 3, 128: 2}),
     ("RTX 4090", (99 << 10, 100 << 10), {64: 2, 128: 2})],
)
def test_decode_stages_fit_two_ctas_an_sm(gpu, smem, expected):
    for head_dim, stages in expected.items():
        assert native_attention.decode_stages(head_dim, 2, *smem) == stages, (gpu, head_dim)
        assert native_attention.decode_smem(head_dim, 2, stages) <= smem[0]


def test_choose_num_splits():
    slots = 4 * 132  # resident CTAs on a 132-SM GPU at 4 CTAs per SM
    assert native_attention.choose_num_splits(256, 60, slots) == 1  # too short to split
    assert native_attention.choose_num_splits(256, 400, slots) == 2  # half a wave -> nearly a full one
    assert native_attention.choose_num_splits(256, 4096, slots) == 2  # one full wave, not 1.45
    assert 60 <= native_attention.choose_num_splits(8, 16384, slots) <= 66  # batch 1: fill the GPU
    assert native_attention.choose_num_splits(8, 300, slots) == 5  # but never under 64 tokens a split
    assert native_attention.choose_num_splits(512, 8192, slots) == 1  # already a full wave


def test_programmatic_dependent_launch_on_sm90_and_newer(monkeypatch):
    from lmdeploy_sdk.native import driver

    monkeypatch.delenv(driver.DISABLE_PDL_ENV, raising=False)
    assert not driver.uses_pdl((8, 0)) and not driver.uses_pdl((8, 9))
    assert driver.uses_pdl((9, 0)) and driver.uses_pdl((10, 0))
    monkeypatch.setenv(driver.DISABLE_PDL_ENV, "1")
    assert not driver.uses_pdl((9, 0))


def test_sm90a_modules_only_on_compute_capability_9_0(monkeypatch):
    monkeypatch.delenv(driver.DISABLE_SM90A_ENV, raising=False)
    assert driver.runs_sm90a((9, 0)) and driver.uses_sm90a((9, 0))
    for capability in [(8, 0), (8, 9), (9, 1), (10, 0), (12, 0)]:  # 'a' PTX runs on no later GPU either
        assert not driver.runs_sm90a(capability) and not driver.uses_sm90a(capability), capability
    monkeypatch.setenv(driver.DISABLE_SM90A_ENV, "1")
    assert driver.runs_sm90a((9, 0)) and not driver.uses_sm90a((9, 0))
    assert driver.is_sm90a_module("paged_attention_prefill_sm90a")
    assert not driver.is_sm90a_module("paged_attention_prefill")


def _kernels_without_gpu(capability: tuple[int, int], ptx_dir) -> driver.DeviceKernels:
    """A DeviceKernels with the fields module lookup reads, built without CUDA."""
    kernels = driver.DeviceKernels.__new__(driver.DeviceKernels)
    kernels.gpu = f"cuda:0 (test GPU, sm_{capability[0]}{capability[1]})"
    kernels.ptx_dir = ptx_dir / driver.PDL_PTX_SUBDIR
    kernels.sm90a = driver.runs_sm90a(capability)
    kernels.sm90a_ptx_dir = ptx_dir / driver.SM90A_PTX_SUBDIR
    return kernels


def test_sm90a_module_load_is_refused_off_sm90_and_read_from_its_own_dir(tmp_path):
    with pytest.raises(driver.NativeKernelError, match="sm_90a .* cannot load on cuda:0 \\(test GPU, sm_100\\)"):
        _kernels_without_gpu((10, 0), tmp_path)._load("paged_attention_prefill_sm90a")
    with pytest.raises(driver.NativeKernelError, match=r"sm90a/paged_attention_prefill_sm90a\.ptx is missing"):
        _kernels_without_gpu((9, 0), tmp_path)._load("paged_attention_prefill_sm90a")
    with pytest.raises(driver.NativeKernelError, match=r"sm90/norm\.ptx is missing"):
        _kernels_without_gpu((9, 0), tmp_path)._load("norm")


@pytest.mark.parametrize("runs_sm90a", [True, False])
def test_load_all_modules_adds_the_sm90a_ones_where_they_run(monkeypatch, runs_sm90a):
    loaded: list[str] = []

    class Kernels:
        def load_module(self, module: str) -> None:
            loaded.append(module)

    monkeypatch.setattr(native, "device_kernels", lambda index: Kernels())
    monkeypatch.setattr(native, "device_runs_sm90a", lambda index: runs_sm90a)
    expected = [*native.PTX_MODULES, *(native.SM90A_PTX_MODULES if runs_sm90a else ())]
    assert native.load_all_modules(0) == expected == loaded
