"""SiLU-and-mul (the gated MLP activation) on `activation.ptx`."""
from __future__ import annotations

import torch

from lmdeploy_sdk.native import driver
from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES, contiguous_aligned
from lmdeploy_sdk.ops import reference


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    # x: [..., 2I] (gate | up) -> [..., I]
    if x.dtype not in SUPPORTED_DTYPES or x.dim() == 0 or x.shape[-1] % 16 != 0:
        return reference.silu_and_mul(x)
    x = contiguous_aligned(x)
    inter = x.shape[-1] // 2
    rows = x.numel() // x.shape[-1]
    out = torch.empty((*x.shape[:-1], inter), dtype=x.dtype, device=x.device)
    vecs = inter // 8
    threads = min(256, (vecs + 31) // 32 * 32)
    driver.launch(
        x.device,
        "activation",
        f"silu_and_mul_{driver.dtype_suffix(x.dtype)}",
        grid=(rows, (vecs + threads - 1) // threads),
        block=(threads,),
        args=(driver.ptr(out), driver.ptr(x), driver.i32(inter)),
    )
    return out
