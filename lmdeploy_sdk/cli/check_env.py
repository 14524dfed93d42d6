"""`lmdeploy-sdk check_env`: versions, GPU, driver, and whether our PTX kernels load."""
from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys


def register(sub) -> None:
    p = sub.add_parser("check_env", help="print versions, GPU, driver and kernel status")
    p.set_defaults(func=run)


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect() -> dict[str, str]:
    import torch

    from lmdeploy_sdk.version import __version__

    info = {
        "lmdeploy-sdk": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for pkg in ("torch", "transformers", "safetensors", "tokenizers", "cuda-bindings", "gguf",
                "litestar", "msgspec", "uvicorn", "openai", "langchain-core"):
        info[pkg] = _version(pkg)
    info["cuda available"] = str(torch.cuda.is_available())
    if torch.cuda.is_available():
        info["torch cuda"] = str(torch.version.cuda)
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info[f"gpu {i}"] = f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.1f} GiB)"
    info["native kernels"] = _kernel_status()
    return info


def _kernel_status() -> str:
    import torch

    from lmdeploy_sdk import native

    if not torch.cuda.is_available():
        return "not used (no CUDA device; the reference ops run)"
    if not native.native_available():
        return "not used (needs cuda-bindings and an sm_80+ GPU, or disabled by LMDEPLOY_SDK_DISABLE_NATIVE)"
    try:
        loaded = [m for i in range(torch.cuda.device_count()) for m in native.load_all_modules(i)]
    except native.NativeKernelError as e:
        return f"FAILED to load: {e}"
    return f"ok ({len(loaded)} PTX modules loaded on {torch.cuda.device_count()} GPU(s))"


def run(args: argparse.Namespace) -> int:
    info = collect()
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")
    return 0
