"""Our CUDA kernels: sources in src/, committed PTX in ptx/, launched through cuda-python.

`get_op(name, dtype)` returns a callable with the signature of
lmdeploy_sdk.ops.reference.<name>, or None when no kernel serves that op/dtype
here (no CUDA, no cuda-python, or no kernel for it yet) so the caller falls back.
"""
from __future__ import annotations

import torch


def get_op(name: str, dtype: torch.dtype):
    return None
