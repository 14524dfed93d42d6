"""InternLM2's packed wqkv -> our [q | k | v] rows (weights are also covered by the parity tests)."""
from __future__ import annotations

import pytest
import torch

from lmdeploy_sdk.models.internlm2 import unpack_wqkv


def _pack(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hkv: int, d: int) -> torch.Tensor:
    """The InternLM2 layout, built as its checkpoints are: per kv head, its q heads, then k, then v."""
    tail = q.shape[1:]
    groups = q.shape[0] // (hkv * d)
    parts = (q.view(hkv, groups, d, *tail), k.view(hkv, 1, d, *tail), v.view(hkv, 1, d, *tail))
    return torch.cat(parts, dim=1).reshape(-1, *tail)


@pytest.mark.parametrize("tail", [(), (6,)], ids=["bias", "weight"])
@pytest.mark.parametrize(("hq", "hkv"), [(4, 2), (4, 4), (8, 1)])
def test_unpack_wqkv(tail, hq, hkv):
    d = 4
    q, k, v = (torch.randn(h * d, *tail) for h in (hq, hkv, hkv))
    unpacked = unpack_wqkv(_pack(q, k, v, hkv, d), num_kv_heads=hkv, head_dim=d)
    assert torch.equal(unpacked, torch.cat((q, k, v)))
