"""Load our committed PTX through the CUDA driver API and launch kernels on torch's stream.

Everything CUDA is imported lazily, so this module imports on machines with no GPU
and no cuda-python. Per GPU, one `DeviceKernels` (from the cached `device_kernels`
accessor) loads each PTX module once with cuModuleLoadData into the device's primary
context (the one PyTorch uses) and keeps the function handles. Every CUresult is
checked; failures raise NativeKernelError naming the kernel, the PTX file and the GPU.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

PTX_DIR = Path(__file__).resolve().parent / "ptx"
# The compute_90 build (programmatic dependent launch), loaded on sm_90 and newer.
PDL_PTX_SUBDIR = "sm90"
PDL_MIN_CAPABILITY = (9, 0)
# Set to 1 to load the compute_80 PTX and launch without PDL on sm_90+ too (A/B, debugging).
DISABLE_PDL_ENV = "LMDEPLOY_SDK_DISABLE_PDL"
# Arch-specific modules (wgmma): src/<name>_sm90a.cu builds only to ptx/sm90a/<name>_sm90a.ptx
# (compute_90a), which the driver loads on compute capability 9.0 exactly (H100, H200):
# 'a' PTX runs on no other GPU, later ones included. Launched like any other module.
SM90A_PTX_SUBDIR = "sm90a"
SM90A_MODULE_SUFFIX = "_sm90a"
SM90A_CAPABILITY = (9, 0)
# Set to 1 to run the portable kernels instead of the sm_90a ones there too (A/B, debugging);
# read at each dispatch (uses_sm90a), so it can change within a process.
DISABLE_SM90A_ENV = "LMDEPLOY_SDK_DISABLE_WGMMA"

KernelArg = ctypes.c_void_p | ctypes.c_int | ctypes.c_int64 | ctypes.c_float


class NativeKernelError(RuntimeError):
    """A CUDA driver call for one of our kernels failed."""


def cuda_bindings_available() -> bool:
    """True when the `cuda-bindings` package (cuda.bindings.driver) can be imported."""
    try:
        return importlib.util.find_spec("cuda.bindings.driver") is not None
    except ModuleNotFoundError:
        return False


def _drv():
    from cuda.bindings import driver

    return driver


def _check(result: Any, what: str) -> Any:
    """Unpack a cuda-python (CUresult, *values) tuple; raise NativeKernelError on failure."""
    drv = _drv()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != drv.CUresult.CUDA_SUCCESS:
        _, name = drv.cuGetErrorName(err)
        _, desc = drv.cuGetErrorString(err)
        name = name.decode() if isinstance(name, bytes) else str(err)
        desc = desc.decode() if isinstance(desc, bytes) else ""
        raise NativeKernelError(f"{what}: {name} ({desc})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


# Kernel argument constructors: each returns the ctypes object the kernel parameter holds.
def ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def i32(v: int) -> ctypes.c_int:
    return ctypes.c_int(int(v))


def i64(v: int) -> ctypes.c_int64:
    return ctypes.c_int64(int(v))


def f32(v: float) -> ctypes.c_float:
    return ctypes.c_float(float(v))


def uses_pdl(capability: tuple[int, int], ptx_dir: Path = PTX_DIR) -> bool:
    """Whether a GPU of this compute capability gets the compute_90 PTX and PDL launches."""
    return (
        capability >= PDL_MIN_CAPABILITY
        and os.environ.get(DISABLE_PDL_ENV) != "1"
        and (ptx_dir / PDL_PTX_SUBDIR).is_dir()
    )


def runs_sm90a(capability: tuple[int, int]) -> bool:
    """Whether a GPU of this compute capability can load our sm_90a modules (9.0 only)."""
    return tuple(capability) == SM90A_CAPABILITY


def uses_sm90a(capability: tuple[int, int]) -> bool:
    """Whether ops dispatch to sm_90a kernels on such a GPU: it can run them and
    LMDEPLOY_SDK_DISABLE_WGMMA is not 1."""
    return runs_sm90a(capability) and os.environ.get(DISABLE_SM90A_ENV) != "1"


def is_sm90a_module(module: str) -> bool:
    """Whether `module` is an arch-specific build that lives in ptx/sm90a/."""
    return module.endswith(SM90A_MODULE_SUFFIX)


@functools.cache
def device_capability(device_index: int) -> tuple[int, int]:
    """(major, minor) compute capability of one GPU."""
    major, minor = torch.cuda.get_device_capability(device_index)
    return major, minor


def device_runs_sm90a(device_index: int) -> bool:
    """Whether this GPU can run kernels of an *_sm90a module (through `launch`, as any other)."""
    return runs_sm90a(device_capability(device_index))


def device_uses_sm90a(device_index: int) -> bool:
    """Whether ops on this GPU dispatch to their sm_90a kernels (see uses_sm90a)."""
    return uses_sm90a(device_capability(device_index))


class DeviceKernels:
    """The PTX modules and kernel handles loaded on one GPU (its primary context).

    On sm_90+ it loads the compute_90 build and launches with programmatic stream
    serialization, so a kernel's launch and prologue overlap its predecessor's tail.
    *_sm90a modules come from ptx/sm90a/ and load on compute capability 9.0 only.
    """

    def __init__(self, device_index: int, ptx_dir: Path = PTX_DIR) -> None:
        drv = _drv()
        self.index = device_index
        torch.cuda.init()
        props = torch.cuda.get_device_properties(device_index)
        self.pdl = uses_pdl((props.major, props.minor), ptx_dir)
        self.ptx_dir = ptx_dir / PDL_PTX_SUBDIR if self.pdl else ptx_dir
        self.sm90a = runs_sm90a((props.major, props.minor))  # can load *_sm90a modules
        self.sm90a_ptx_dir = ptx_dir / SM90A_PTX_SUBDIR
        self.gpu = f"cuda:{device_index} ({props.name}, sm_{props.major}{props.minor})"
        _check(drv.cuInit(0), f"cuInit on {self.gpu}")
        self._device = _check(drv.cuDeviceGet(device_index), f"cuDeviceGet on {self.gpu}")
        self._context = _check(
            drv.cuDevicePrimaryCtxRetain(self._device), f"cuDevicePrimaryCtxRetain on {self.gpu}"
        )
        self._modules: dict[str, Any] = {}
        self._functions: dict[str, Any] = {}
        self._occupancy: dict[tuple[str, str, int, int], int] = {}
        self._smem_opt_in: dict[str, int] = {}  # kernel key -> dynamic smem bytes allowed
        self._lock = threading.RLock()

    def _make_current(self) -> None:
        drv = _drv()
        current = _check(drv.cuCtxGetCurrent(), f"cuCtxGetCurrent on {self.gpu}")
        if current is None or int(current) != int(self._context):
            _check(drv.cuCtxSetCurrent(self._context), f"cuCtxSetCurrent on {self.gpu}")

    def load_module(self, module: str) -> Any:
        """The CUmodule of ptx/<module>.ptx, loaded into this GPU's context on first use."""
        with self._lock:
            if module not in self._modules:
                self._modules[module] = self._load(module)
            return self._modules[module]

    def _load(self, module: str) -> Any:
        if is_sm90a_module(module) and not self.sm90a:
            raise NativeKernelError(
                f"{module}.ptx is built for sm_90a (compute capability 9.0: H100, H200) and cannot load on {self.gpu}"
            )
        path = (self.sm90a_ptx_dir if is_sm90a_module(module) else self.ptx_dir) / f"{module}.ptx"
        if not path.exists():
            raise NativeKernelError(
                f"PTX file {path} is missing on {self.gpu} (run `python native/build.py`)"
            )
        image = path.read_bytes() + b"\0"  # the driver wants NUL-terminated PTX text
        self._make_current()
        try:
            return _check(_drv().cuModuleLoadData(image), f"loading {path} on {self.gpu}")
        except NativeKernelError as exc:
            raise NativeKernelError(
                f"{exc}; our PTX targets sm_80+ and a driver too old for its PTX ISA version rejects it"
            ) from None

    def function(self, module: str, kernel: str) -> Any:
        """The CUfunction `kernel` of ptx/<module>.ptx, loaded on first use."""
        key = f"{module}:{kernel}"
        fn = self._functions.get(key)
        if fn is None:
            with self._lock:
                fn = self._functions.get(key)
                if fn is None:
                    mod = self.load_module(module)
                    fn = _check(
                        _drv().cuModuleGetFunction(mod, kernel.encode()),
                        f"kernel {kernel} in {module}.ptx on {self.gpu}",
                    )
                    self._functions[key] = fn
        return fn

    def _allow_shared_mem(self, module: str, kernel: str, shared_mem: int) -> None:
        """Opt `kernel` in to `shared_mem` bytes of dynamic shared memory (above 48 KiB needs it)."""
        key = f"{module}:{kernel}"
        if shared_mem <= max(48 * 1024, self._smem_opt_in.get(key, 0)):
            return
        drv = _drv()
        _check(
            drv.cuFuncSetAttribute(
                self.function(module, kernel),
                drv.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                shared_mem,
            ),
            f"allowing {shared_mem} bytes of shared memory for {kernel} ({module}.ptx) on {self.gpu}",
        )
        self._smem_opt_in[key] = shared_mem

    def max_active_blocks(self, module: str, kernel: str, threads: int, shared_mem: int = 0) -> int:
        """How many CTAs of `kernel` fit on one multiprocessor at once (registers, smem)."""
        key = (module, kernel, threads, shared_mem)
        if key not in self._occupancy:
            self._allow_shared_mem(module, kernel, shared_mem)
            self._occupancy[key] = _check(
                _drv().cuOccupancyMaxActiveBlocksPerMultiprocessor(
                    self.function(module, kernel), threads, shared_mem
                ),
                f"occupancy of {kernel} ({module}.ptx) on {self.gpu}",
            )
        return self._occupancy[key]

    def launch(
        self,
        module: str,
        kernel: str,
        grid: Sequence[int],
        block: Sequence[int],
        args: Sequence[KernelArg],
        shared_mem: int = 0,
    ) -> None:
        """Launch `kernel` on torch's current stream of this device; args are ctypes values.

        shared_mem: bytes of dynamic shared memory; above 48 KiB the kernel is opted in first.
        """
        drv = _drv()
        fn = self.function(module, kernel)
        self._make_current()
        self._allow_shared_mem(module, kernel, shared_mem)
        gx, gy, gz = (*grid, 1, 1)[:3]
        bx, by, bz = (*block, 1, 1)[:3]
        if gx == 0 or gy == 0 or gz == 0:
            return  # empty problem: nothing to launch
        arg_ptrs = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
        stream = drv.CUstream(torch.cuda.current_stream(self.index).cuda_stream)
        what = f"launching {kernel} ({module}.ptx) on {self.gpu} with grid {tuple(grid)} block {tuple(block)}"
        if not self.pdl:
            _check(
                drv.cuLaunchKernel(fn, gx, gy, gz, bx, by, bz, shared_mem, stream, ctypes.addressof(arg_ptrs), 0),
                what,
            )
            return
        config = drv.CUlaunchConfig()
        config.gridDimX, config.gridDimY, config.gridDimZ = gx, gy, gz
        config.blockDimX, config.blockDimY, config.blockDimZ = bx, by, bz
        config.sharedMemBytes = shared_mem
        config.hStream = stream
        attr = drv.CUlaunchAttribute()
        attr.id = drv.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        attr.value.programmaticStreamSerializationAllowed = 1
        config.attrs = [attr]
        config.numAttrs = 1
        _check(drv.cuLaunchKernelEx(config, fn, ctypes.addressof(arg_ptrs), 0), what)


@functools.cache
def device_kernels(device_index: int) -> DeviceKernels:
    """The per-process loader for one GPU (modules load lazily, once)."""
    return DeviceKernels(device_index)


def launch(
    device: torch.device,
    module: str,
    kernel: str,
    grid: Sequence[int],
    block: Sequence[int],
    args: Sequence[KernelArg],
    shared_mem: int = 0,
) -> None:
    """Launch a kernel of ptx/<module>.ptx (ptx/sm90a/ for *_sm90a modules) on `device` (a CUDA torch.device)."""
    device_kernels(device_index(device)).launch(module, kernel, grid, block, args, shared_mem)


def device_index(device: torch.device) -> int:
    """The ordinal of a CUDA torch.device ('cuda' alone: the current one)."""
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.cache
def sm_count(device_index: int) -> int:
    """Multiprocessors of one GPU (the launch heuristics size grids in whole waves)."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


# Shared memory a CTA may use when the device does not report its opt-in limit: every
# sm_80+ GPU allows at least 99 KiB a block (sm_86/89; sm_80 163 KiB, sm_90 227 KiB).
DEFAULT_SMEM_LIMIT = 96 * 1024


@functools.cache
def smem_limits(device_index: int) -> tuple[int, int]:
    """(shared memory bytes a CTA may opt in to, bytes an SM holds) of one GPU."""
    props = torch.cuda.get_device_properties(device_index)
    per_cta = int(getattr(props, "shared_memory_per_block_optin", 0) or DEFAULT_SMEM_LIMIT)
    return per_cta, int(getattr(props, "shared_memory_per_multiprocessor", 0) or per_cta)


def dtype_suffix(dtype: torch.dtype) -> str:
    """Kernel-name suffix of a dtype we have kernels for."""
    if dtype == torch.float16:
        return "f16"
    if dtype == torch.bfloat16:
        return "bf16"
    raise ValueError(f"no native kernels for dtype {dtype}; expected float16 or bfloat16")
