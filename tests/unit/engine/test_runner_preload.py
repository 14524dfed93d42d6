"""Which runners load every kernel module at start-up (the GPU side is tests/gpu/test_engine_gpu.py)."""
import pytest
import torch

from lmdeploy_sdk import native
from lmdeploy_sdk.engine.runner import preload_native_modules
from lmdeploy_sdk.native import int4_gemm


@pytest.fixture
def loads(monkeypatch) -> list:
    """Device indices load_all_modules was called with, and the devices whose int4 counters
    were prepared; native kernels look available."""
    calls: list = []
    monkeypatch.setattr(native, "native_available", lambda: True)
    monkeypatch.setattr(native, "load_all_modules", lambda index=0: calls.append(index) or [])
    monkeypatch.setattr(int4_gemm, "prepare", lambda device: calls.append(device))
    return calls


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_runner_with_kernel_dtype_preloads_on_its_gpu(loads, dtype):
    """Modules load, and the int4 kernels' split-K counters exist before any graph capture."""
    preload_native_modules(torch.device("cuda", 1), dtype)
    assert loads == [1, torch.device("cuda", 1)]


@pytest.mark.parametrize("device,dtype", [("cpu", torch.bfloat16), ("cuda:0", torch.float32)])
def test_no_preload_where_the_kernels_do_not_run(loads, device, dtype):
    preload_native_modules(torch.device(device), dtype)
    assert loads == []


def test_no_preload_without_native_kernels(loads, monkeypatch):
    monkeypatch.setattr(native, "native_available", lambda: False)
    preload_native_modules(torch.device("cuda", 0), torch.float16)
    assert loads == []
