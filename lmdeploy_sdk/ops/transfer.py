"""Host lists of step inputs -> device tensors, queued on the stream instead of waited for."""
from __future__ import annotations

import torch


def to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host list as a device tensor without waiting for the GPU.

    A copy from pageable memory waits for the stream's earlier work; from pinned
    memory it is queued behind it, so a step can be prepared while the last one runs.
    """
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype)
    return pinned(values, dtype).to(device, non_blocking=True)


def pinned(values: list, dtype: torch.dtype) -> torch.Tensor:
    """A host list as a page-locked tensor: copies from it to the GPU are queued, not waited for
    (torch keeps the memory until such a copy has run)."""
    return torch.tensor(values, dtype=dtype, pin_memory=True)


def padded_rows(rows: list[list[int]], width: int, num_rows: int, fill: int = 0) -> list[int]:
    """rows padded with `fill` to `width` columns and to `num_rows` rows, flattened row-major."""
    flat: list[int] = []
    for row in rows:
        flat += row
        flat += [fill] * (width - len(row))
    flat += [fill] * (width * (num_rows - len(rows)))
    return flat
