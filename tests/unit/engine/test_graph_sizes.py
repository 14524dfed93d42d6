"""Which decode batch sizes get a CUDA graph (the choice; the timing runs in tests/gpu)."""
from __future__ import annotations

import pytest
import torch

from lmdeploy_sdk.engine import graph_sizes
from lmdeploy_sdk.engine.cuda_graphs import DecodeGraphs
from lmdeploy_sdk.engine.graph_sizes import FIXED_SIZES, SWEEP_FROM, SWEEP_STEP, candidate_sizes, cheapest_sizes


@pytest.mark.parametrize("max_batch", [1, 5, 64, SWEEP_FROM, SWEEP_FROM + 1, 200, 1024])
def test_candidates_cover_every_batch_up_to_the_largest(max_batch):
    fixed, swept = candidate_sizes(max_batch)
    assert fixed == [s for s in FIXED_SIZES if s < max_batch]
    assert swept[-1] == max_batch
    assert all(s >= SWEEP_FROM for s in swept[:-1])
    assert all(b - a == SWEEP_STEP for a, b in zip(swept[:-2], swept[1:-1]) if b < 1024)
    assert sorted(set(fixed + swept)) == fixed + swept


def test_the_sweep_thins_out_past_1024_rows():
    _, swept = candidate_sizes(4096)
    assert swept[:2] == [SWEEP_FROM, SWEEP_FROM + SWEEP_STEP]
    steps = {b - a for a, b in zip(swept, swept[1:])}
    assert steps == {16, 32, 64}
    assert sum(1024 <= s < 2048 for s in swept) == 32 and sum(2048 <= s < 4096 for s in swept) == 32


def test_candidates_reject_an_empty_batch():
    with pytest.raises(ValueError, match="max_batch_size=0"):
        candidate_sizes(0)


def test_a_size_that_a_larger_one_beats_loses_its_graph():
    # 448 rows cost more than 512 (a tile shape that fits badly): a step of 440 rows is
    # cheaper padded to 512, one of 400 padded to 432
    costs = {384: 8.3, 400: 10.5, 416: 10.1, 432: 9.5, 448: 14.3, 464: 11.1, 512: 10.4, 640: 14.2}
    assert cheapest_sizes(costs) == [384, 432, 512, 640]


def test_cheapest_sizes_are_the_cheapest_fit_for_every_batch():
    gen = torch.Generator().manual_seed(0)
    costs = {s: float(c) for s, c in zip(range(128, 1025, 16), torch.rand(57, generator=gen) + torch.arange(57) / 40)}
    kept = cheapest_sizes(costs)
    assert kept[-1] == max(costs)
    assert all(costs[a] < costs[b] for a, b in zip(kept, kept[1:]))
    for n in range(1, max(costs) + 1):
        chosen = next(s for s in kept if s >= n)
        assert costs[chosen] == min(c for s, c in costs.items() if s >= n)


def test_decode_graphs_reject_unsorted_sizes():
    for bad in ([], [4, 2], [2, 2], [0, 4]):
        with pytest.raises(ValueError, match="distinct, ascending and >= 1"):
            DecodeGraphs(None, [], bad, 64, 16, torch.device("cpu"))


def test_choose_keeps_the_fixed_sizes_and_the_cheapest_swept_ones(monkeypatch):
    timed = {}

    def fake_costs(model, sizes, device):
        timed["sizes"] = sizes
        return {s: (5.0 if s == 144 else s / 100) for s in sizes}  # 144 costs more than 160

    monkeypatch.setattr(graph_sizes, "projection_costs", fake_costs)
    chosen = graph_sizes.choose_graph_sizes(None, 200, torch.device("cpu"))
    assert timed["sizes"] == [128, 144, 160, 176, 192, 200]
    assert chosen == list(FIXED_SIZES) + [128, 160, 176, 192, 200]
