"""Row-wise argmax of fp16/bf16 logits (greedy decoding's last op) on `argmax.ptx`."""
from __future__ import annotations

import math

import torch

from lmdeploy_sdk.native import driver
from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES, vec8_ready
from lmdeploy_sdk.ops import reference

MODULE = "argmax"
THREADS = 256  # kArgmaxThreads
MIN_SLICE = THREADS * 8  # elements a CTA takes at least (one 16-byte load per thread)
CTAS_PER_SM = 4  # the grid aims at this many CTAs per SM when rows are few


def num_parts(rows: int, vocab: int, sm_count: int) -> int:
    """CTAs per row: enough to spread a few rows over the whole GPU, none below MIN_SLICE
    elements, and a single one (no merge launch) once the rows alone fill the GPU."""
    return max(1, min(math.ceil(vocab / MIN_SLICE), math.ceil(CTAS_PER_SM * sm_count / rows)))


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """torch.argmax(logits, dim=-1) for [S, V] logits: int64 [S]."""
    if (
        logits.dtype not in SUPPORTED_DTYPES
        or logits.dim() != 2
        or logits.shape[0] == 0
        or logits.shape[1] == 0
        or logits.stride(1) != 1
        or logits.shape[1] >= 2**31
    ):
        return reference.argmax(logits)
    rows, vocab = logits.shape
    out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    parts = num_parts(rows, vocab, driver.sm_count(driver.device_index(logits.device)))
    vec = vec8_ready(logits) and vocab % 8 == 0  # whole 16-byte vectors, none past a row
    slice_len = math.ceil(math.ceil(vocab / parts) / 8) * 8
    parts = math.ceil(vocab / slice_len)  # rounding the slice up may leave the last CTA nothing
    part_v = part_i = None
    if parts > 1:
        part_v = torch.empty((rows, parts), dtype=torch.float32, device=logits.device)
        part_i = torch.empty((rows, parts), dtype=torch.int32, device=logits.device)
    sfx = driver.dtype_suffix(logits.dtype)
    driver.launch(
        logits.device,
        MODULE,
        f"argmax_partial_vec_{sfx}" if vec else f"argmax_partial_{sfx}",
        grid=(parts, rows),
        block=(THREADS,),
        args=(
            driver.ptr(part_v),
            driver.ptr(part_i),
            driver.ptr(out),
            driver.ptr(logits),
            driver.i32(vocab),
            driver.i64(logits.stride(0)),
            driver.i32(slice_len),
        ),
    )
    if parts > 1:
        driver.launch(
            logits.device,
            MODULE,
            "argmax_final",
            grid=(rows,),
            block=(THREADS,),
            args=(driver.ptr(out), driver.ptr(part_v), driver.ptr(part_i), driver.i32(parts)),
        )
    return out
