"""The batch description every attention op reads.

One flat batch holds B sequences. Sequence b contributes ``q_lens[b]`` new tokens
(its query rows, laid out contiguously in order b = 0..B-1) and attends to
``kv_lens[b]`` cached tokens in total, the new ones included. The new tokens are
the *last* ``q_lens[b]`` positions of its context, so query row i of sequence b
sits at context position ``kv_lens[b] - q_lens[b] + i`` and sees keys 0..that
position (causal). A decode step is ``q_lens[b] == 1``; a first prefill is
``q_lens[b] == kv_lens[b]``; chunked prefill and a later session turn are in between.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    # device tensors
    cu_seqlens_q: torch.Tensor  # [B+1] int32, prefix sums of q_lens
    kv_lens: torch.Tensor  # [B] int32
    block_tables: torch.Tensor  # [B, max_blocks] int32, padded with 0
    slot_mapping: torch.Tensor  # [T] int64, cache slot (block * block_size + offset) of each new token
    # host copies (no device sync needed to read them)
    q_lens_cpu: list[int]
    kv_lens_cpu: list[int]
    max_q_len: int
    max_kv_len: int
    block_size: int

    @property
    def num_seqs(self) -> int:
        return len(self.q_lens_cpu)

    @property
    def is_decode(self) -> bool:
        """True when every sequence adds exactly one token (a pure decode batch)."""
        return self.max_q_len == 1
