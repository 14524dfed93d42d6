"""Which decode batch sizes get a CUDA graph.

A step of n decodes replays the smallest graph of >= n rows. Its padding rows cost what
real rows cost in the projections (GEMMs) and next to nothing elsewhere (no KV, a
1-token context). cuBLAS's time is not monotone in the row count (its tile shapes fit
some counts badly: on an H200 the Llama-3-8B projections ran slower at 448 rows than at
512). So from SWEEP_FROM rows on, candidates every SWEEP_STEP rows (sparser past 1024)
are timed once at engine start, and a size keeps its graph only if every larger
candidate costs more: the graph a step replays is then the cheapest one it fits. Below
SWEEP_FROM, where a step reads all weights whatever its rows, the sizes are fixed.
"""
from __future__ import annotations

import torch
from torch import nn

from lmdeploy_sdk import ops
from lmdeploy_sdk.quant.linear import Int4Linear

FIXED_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96)
SWEEP_FROM = 128
SWEEP_STEP = 16  # rows between candidates up to 1023; it doubles at 1024, 2048, ... (32 an octave)
TIMED_CALLS = 5  # back-to-back calls per (size, weight shape); their mean is one timing
TIMED_PASSES = 2  # sweeps after an untimed one (clocks, cuBLAS's choices); a size's cost is its fastest


def candidate_sizes(max_batch_size: int) -> tuple[list[int], list[int]]:
    """(fixed sizes, swept sizes) up to max_batch_size, the last swept size. The sweep's
    step grows with the size, so a large max_batch_size adds few graphs (and seconds)."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size={max_batch_size} must be >= 1")
    fixed = [s for s in FIXED_SIZES if s < min(SWEEP_FROM, max_batch_size)]
    swept, size = [], SWEEP_FROM
    while size < max_batch_size:
        swept.append(size)
        size += SWEEP_STEP << max(0, (size // 512).bit_length() - 1)
    return fixed, swept + [max_batch_size]


def cheapest_sizes(costs: dict[int, float]) -> list[int]:
    """The sizes no larger size costs as little as (the largest is always kept)."""
    keep, best = [], float("inf")
    for size in sorted(costs, reverse=True):
        if costs[size] < best:
            keep.append(size)
            best = costs[size]
    return sorted(keep)


def projection_costs(model: nn.Module, sizes: list[int], device: torch.device) -> dict[int, float]:
    """Seconds the decoder layers' linear projections take at each row count."""
    layers = [(m.weight, m.bias) for m in model.model.layers.modules() if isinstance(m, (nn.Linear, Int4Linear))]
    return linear_costs(layers, sizes, device)


def linear_costs(
    weights: list[tuple[torch.Tensor, torch.Tensor | None]], sizes: list[int], device: torch.device
) -> dict[int, float]:
    """Seconds ops.linear takes over every (weight [N, K], bias) at each row count (CUDA events)."""
    # one timing per distinct weight shape, times the weights that have it
    shapes: dict[tuple, list] = {}
    for weight, bias in weights:
        shapes.setdefault((tuple(weight.shape), bias is not None), [weight, bias, 0])[2] += 1
    dtype = weights[0][0].dtype
    widest = max(weight.shape[1] for weight, _, _ in shapes.values())
    x_all = torch.randn(max(sizes), widest, device=device, dtype=dtype)  # random rows: GEMM time depends on the data
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    costs = {size: float("inf") for size in sizes}
    with torch.inference_mode():
        for timed in [False] + [True] * TIMED_PASSES:  # an idle GPU's first sweep runs at lower clocks
            for size in sizes:
                total = 0.0
                for weight, bias, count in shapes.values():
                    x = x_all[:size, : weight.shape[1]]
                    start.record()
                    for _ in range(TIMED_CALLS):
                        ops.linear(x, weight, bias)
                    end.record()
                    end.synchronize()
                    total += count * start.elapsed_time(end) / 1e3 / TIMED_CALLS
                if timed:
                    costs[size] = min(costs[size], total)
    return costs


def choose_graph_sizes(model: nn.Module, max_batch_size: int, device: torch.device) -> list[int]:
    """The fixed small sizes, then the swept sizes that are the cheapest way to fit their rows."""
    fixed, swept = candidate_sizes(max_batch_size)
    return fixed + cheapest_sizes(projection_costs(model, swept, device))
