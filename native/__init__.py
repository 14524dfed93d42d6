"""Our CUDA kernels: sources in src/, committed PTX in ptx/, launched through cuda-python.

`get_op(name, dtype)` returns a callable with the signature of
lmdeploy_sdk.ops.reference.<name>, or None when no kernel serves that op/dtype
here (no CUDA, no cuda-python, a GPU older than sm_80, or a dtype other than
fp16/bf16) so the caller falls back. The callables themselves fall back to the
reference for shapes the kernels do not cover (e.g. head dims other than 64/128).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch

from lmdeploy_sdk.native.driver import (
    NativeKernelError,
    cuda_bindings_available,
    device_kernels,
    device_runs_sm90a,
)
from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES

__all__ = ["OP_NAMES", "NativeKernelError", "get_op", "native_available", "load_all_modules"]

OP_NAMES = (
    "rms_norm",
    "add_rms_norm",
    "apply_rope",
    "silu_and_mul",
    "store_kv",
    "rope_store_kv",
    "paged_attention",
    "linear",
    "rms_norm_linear",
    "rms_norm_gated_linear",
    "rms_norm_rope_store_kv",
    "argmax",
)
PTX_MODULES = (
    "activation",
    "argmax",
    "gemv",
    "int4_gemm",
    "kv_cache",
    "kv_quant",
    "norm",
    "paged_attention_decode",
    "paged_attention_decode_quant",
    "paged_attention_prefill",
    "rope",
)
# Arch-specific modules (ptx/sm90a/), loaded where the GPU runs them (driver.device_runs_sm90a).
SM90A_PTX_MODULES = ("paged_attention_prefill_sm90a",)
MIN_CAPABILITY = (8, 0)
# Set to 1 to run the pure-torch reference ops on CUDA too (debugging, parity checks).
DISABLE_ENV = "LMDEPLOY_SDK_DISABLE_NATIVE"


@functools.cache
def native_available() -> bool:
    """True when this process can run our kernels: CUDA GPUs (all sm_80+) and cuda-python."""
    if os.environ.get(DISABLE_ENV) == "1":
        return False
    if not torch.cuda.is_available() or not cuda_bindings_available():
        return False
    return all(
        torch.cuda.get_device_capability(i) >= MIN_CAPABILITY for i in range(torch.cuda.device_count())
    )


@functools.cache
def _op_table() -> dict[str, Callable]:
    from lmdeploy_sdk.native import activation, argmax, gemv, kv_cache, norm, paged_attention, rope

    return {
        "rms_norm": norm.rms_norm,
        "add_rms_norm": norm.add_rms_norm,
        "apply_rope": rope.apply_rope,
        "silu_and_mul": activation.silu_and_mul,
        "store_kv": kv_cache.store_kv,
        "rope_store_kv": rope.rope_store_kv,
        "paged_attention": paged_attention.paged_attention,
        "linear": gemv.linear,
        "rms_norm_linear": gemv.rms_norm_linear,
        "rms_norm_gated_linear": gemv.rms_norm_gated_linear,
        "rms_norm_rope_store_kv": gemv.rms_norm_rope_store_kv,
        "argmax": argmax.argmax,
    }


def get_op(name: str, dtype: torch.dtype) -> Callable | None:
    """The native kernel for op `name` on `dtype` tensors, or None to use the reference."""
    if name not in OP_NAMES:
        raise ValueError(f"unknown op {name!r}; native ops are {', '.join(OP_NAMES)}")
    if dtype not in SUPPORTED_DTYPES or not native_available():
        return None
    return _op_table()[name]


def load_all_modules(device_index: int = 0) -> list[str]:
    """Load every PTX module one GPU runs (its sm_90a ones too on an H100/H200); returns their
    names. Raises NativeKernelError on failure."""
    modules = [*PTX_MODULES, *(SM90A_PTX_MODULES if device_runs_sm90a(device_index) else ())]
    kernels = device_kernels(device_index)
    for module in modules:
        kernels.load_module(module)
    return modules
