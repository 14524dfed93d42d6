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
    from lmdeploy_sdk import native

    status = getattr(native, "status", None)
    if status is None:
        return "not built into this version"
    try:
        return status()
    except Exception as e:  # report, don't crash the diagnostic
        return f"failed to load: {e}"


def run(args: argparse.Namespace) -> int:
    info = collect()
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")
    return 0
