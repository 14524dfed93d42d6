"""The cuda-python driver: module loading, errors that name kernel, file and GPU."""
from __future__ import annotations

import os

import pytest
import torch

from lmdeploy_sdk import native
from lmdeploy_sdk.native import driver
from lmdeploy_sdk.ops import reference

pytestmark = pytest.mark.gpu


def test_every_ptx_module_loads():
    sm90a = list(native.SM90A_PTX_MODULES) if driver.device_runs_sm90a(0) else []  # H100 / H200
    assert native.load_all_modules(0) == [*native.PTX_MODULES, *sm90a]


def test_device_kernels_is_cached_per_device():
    assert driver.device_kernels(0) is driver.device_kernels(0)


def test_corrupt_ptx_names_file_and_gpu(tmp_path):
    (tmp_path / "broken.ptx").write_text(".version 9.0\n.target sm_80\nthis is not ptx\n")
    kernels = driver.DeviceKernels(0, ptx_dir=tmp_path)
    with pytest.raises(driver.NativeKernelError) as info:
        kernels.load_module("broken")
    message = str(info.value)
    assert "broken.ptx" in message and torch.cuda.get_device_name(0) in message


def test_missing_kernel_is_named():
    with pytest.raises(driver.NativeKernelError, match="no_such_kernel"):
        driver.device_kernels(0).function("norm", "no_such_kernel")


def test_launch_is_captured_by_cuda_graphs():
    """Launching anywhere but torch's current (capturing) stream would break capture."""
    x = torch.randn((64, 256), device="cuda", dtype=torch.bfloat16)
    w = torch.randn(256, device="cuda", dtype=torch.bfloat16)
    rms_norm = native.get_op("rms_norm", torch.bfloat16)
    rms_norm(x, w, 1e-6)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = rms_norm(x, w, 1e-6)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.testing.assert_close(out, reference.rms_norm(x, w, 1e-6))


def test_sm90_loads_the_pdl_build():
    """On sm_90+ the kernels come from ptx/sm90 and launch with programmatic stream
    serialization (every other GPU test then runs that way there)."""
    kernels = driver.device_kernels(0)
    on_sm90 = torch.cuda.get_device_capability(0) >= driver.PDL_MIN_CAPABILITY
    assert kernels.pdl == (on_sm90 and os.environ.get(driver.DISABLE_PDL_ENV) != "1")
    assert kernels.ptx_dir.name == ("sm90" if kernels.pdl else "ptx")
