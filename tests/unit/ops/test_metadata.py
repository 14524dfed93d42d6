"""AttentionMetadata.decode_prefill_split: the two halves describe the same attention."""
from __future__ import annotations

import torch

from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.ops.metadata import AttentionMetadata

BLOCK = 4


def _meta(q_lens: list[int], kv_lens: list[int]) -> AttentionMetadata:
    # sequence b owns the contiguous blocks starting at b * 8
    tables = [[b * 8 + j for j in range(8)] for b in range(len(q_lens))]
    slots = [b * 8 * BLOCK + p for b, (q, kv) in enumerate(zip(q_lens, kv_lens)) for p in range(kv - q, kv)]
    return AttentionMetadata.from_lists(q_lens, kv_lens, tables, slots, BLOCK, torch.device("cpu"))


def test_split_halves_give_the_same_attention():
    q_lens, kv_lens = [1, 1, 1, 5, 1, 9], [7, 30, 1, 12, 3, 9]
    meta = _meta(q_lens, kv_lens)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(sum(q_lens), 4, 8, generator=gen)
    k_cache = torch.randn(8 * len(q_lens), BLOCK, 2, 8, generator=gen)
    v_cache = torch.randn(8 * len(q_lens), BLOCK, 2, 8, generator=gen)
    whole = reference.paged_attention(q, k_cache, v_cache, meta, 0.3)

    decode, prefill = meta.decode_prefill_split
    assert decode.q_lens_cpu == [1, 1, 1] and decode.max_kv_len == 30 and decode.is_decode
    assert prefill.q_lens_cpu == [5, 1, 9] and prefill.max_q_len == 9 and prefill.max_kv_len == 12
    assert prefill.cu_seqlens_q.tolist() == [0, 5, 6, 15]
    assert torch.equal(prefill.slot_mapping, meta.slot_mapping[3:])
    halves = torch.cat([
        reference.paged_attention(q[:3], k_cache, v_cache, decode, 0.3),
        reference.paged_attention(q[3:], k_cache, v_cache, prefill, 0.3),
    ])
    torch.testing.assert_close(halves, whole)


def test_from_lists_pads_block_tables():
    meta = AttentionMetadata.from_lists([2, 1], [2, 9], [[3], [4, 5, 6]], [12, 13, 24], 4, torch.device("cpu"))
    assert meta.block_tables.tolist() == [[3, 0, 0], [4, 5, 6]]
    assert meta.cu_seqlens_q.tolist() == [0, 2, 3] and meta.max_q_len == 2 and meta.max_kv_len == 9


def test_no_split_for_pure_batches_or_a_prefill_first():
    assert _meta([1, 1], [4, 9]).decode_prefill_split is None
    assert _meta([3, 2], [4, 9]).decode_prefill_split is None
    assert _meta([3, 1], [4, 9]).decode_prefill_split is None  # decodes must lead


def test_packed_blocks_hold_each_context_and_give_the_same_attention():
    q_lens, kv_lens = [1, 5, 2], [7, 12, 2]
    meta = _meta(q_lens, kv_lens)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(sum(q_lens), 4, 8, generator=gen)
    k_cache = torch.randn(8 * len(q_lens), BLOCK, 2, 8, generator=gen)
    v_cache = torch.randn(8 * len(q_lens), BLOCK, 2, 8, generator=gen)
    src, packed = meta.packed_blocks
    assert src.tolist() == [0, 1, 8, 9, 10, 16]  # 2, 3 and 1 blocks of the sequences' tables
    assert packed.block_tables.tolist() == [[0, 1, 0], [2, 3, 4], [5, 0, 0]]
    assert meta.packed_blocks is meta.packed_blocks  # built once
    compact_k, compact_v = k_cache[src.long()], v_cache[src.long()]
    torch.testing.assert_close(reference.paged_attention(q, compact_k, compact_v, packed, 0.3),
                               reference.paged_attention(q, k_cache, v_cache, meta, 0.3))
