"""The batch description every attention op reads.

One flat batch holds B sequences. Sequence b contributes ``q_lens[b]`` new tokens
(its query rows, laid out contiguously in order b = 0..B-1) and attends to
``kv_lens[b]`` cached tokens in total, the new ones included. The new tokens are
the *last* ``q_lens[b]`` positions of its context, so query row i of sequence b
sits at context position ``kv_lens[b] - q_lens[b] + i`` and sees keys 0..that
position (causal). A decode step is ``q_lens[b] == 1``; a first prefill is
``q_lens[b] == kv_lens[b]``; chunked prefill and a later session turn are in between.

The engine's scheduler puts decodes first, so a mixed batch is a run of one-token
sequences followed by the prefills; `decode_prefill_split` cuts it there so each
part can go to the kernel made for it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from lmdeploy_sdk.ops.transfer import padded_rows, to_device


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

    @classmethod
    def from_lists(
        cls,
        q_lens: list[int],
        kv_lens: list[int],
        block_tables: list[list[int]],
        slot_mapping: list[int],
        block_size: int,
        device: torch.device,
    ) -> "AttentionMetadata":
        """The metadata of a batch described by host lists (tables of any widths, padded here)."""
        cu = [0]
        for n in q_lens:
            cu.append(cu[-1] + n)
        width = max(len(t) for t in block_tables)
        return cls(
            cu_seqlens_q=to_device(cu, torch.int32, device),
            kv_lens=to_device(kv_lens, torch.int32, device),
            block_tables=to_device(padded_rows(block_tables, width, len(block_tables)), torch.int32, device)
            .view(len(block_tables), width),
            slot_mapping=to_device(slot_mapping, torch.int64, device),
            q_lens_cpu=q_lens,
            kv_lens_cpu=kv_lens,
            max_q_len=max(q_lens),
            max_kv_len=max(kv_lens),
            block_size=block_size,
        )

    @property
    def num_seqs(self) -> int:
        return len(self.q_lens_cpu)

    @property
    def is_decode(self) -> bool:
        """True when every sequence adds exactly one token (a pure decode batch)."""
        return self.max_q_len == 1

    @functools.cached_property
    def decode_prefill_split(self) -> tuple["AttentionMetadata", "AttentionMetadata"] | None:
        """(the leading one-token sequences, the rest) as two batches; None unless both are non-empty.

        Built once per step (cached): the prefill half's cu_seqlens_q needs a shift on device.
        """
        d = 0
        while d < self.num_seqs and self.q_lens_cpu[d] == 1:
            d += 1
        if d == 0 or d == self.num_seqs:
            return None
        decode = AttentionMetadata(
            cu_seqlens_q=self.cu_seqlens_q[: d + 1],
            kv_lens=self.kv_lens[:d],
            block_tables=self.block_tables[:d],
            slot_mapping=self.slot_mapping[:d],
            q_lens_cpu=self.q_lens_cpu[:d],
            kv_lens_cpu=self.kv_lens_cpu[:d],
            max_q_len=1,
            max_kv_len=max(self.kv_lens_cpu[:d]),
            block_size=self.block_size,
        )
        prefill = AttentionMetadata(
            cu_seqlens_q=self.cu_seqlens_q[d:] - d,
            kv_lens=self.kv_lens[d:],
            block_tables=self.block_tables[d:],
            slot_mapping=self.slot_mapping[d:],
            q_lens_cpu=self.q_lens_cpu[d:],
            kv_lens_cpu=self.kv_lens_cpu[d:],
            max_q_len=max(self.q_lens_cpu[d:]),
            max_kv_len=max(self.kv_lens_cpu[d:]),
            block_size=self.block_size,
        )
        return decode, prefill

    @functools.cached_property
    def packed_blocks(self) -> tuple[torch.Tensor, "AttentionMetadata"]:
        """(the blocks holding each sequence's context, in order: int32 [n]; this batch with block
        tables that address them as 0..n-1) for ops that work on a compact copy of the context
        (attention over an int8/int4 cache dequantizes one). Built once per step (cached)."""
        bs, width = self.block_size, self.block_tables.shape[1]
        counts = [-(-n // bs) for n in self.kv_lens_cpu]
        flat = [b * width + j for b, n in enumerate(counts) for j in range(n)]  # into block_tables.view(-1)
        device = self.block_tables.device
        src = self.block_tables.to(torch.int32).reshape(-1).index_select(0, to_device(flat, torch.int64, device))
        tables, first = [], 0
        for n in counts:
            tables.append(list(range(first, first + n)))
            first += n
        packed = AttentionMetadata(
            cu_seqlens_q=self.cu_seqlens_q,
            kv_lens=self.kv_lens,
            block_tables=to_device(padded_rows(tables, max(counts), len(tables)), torch.int32, device)
            .view(len(tables), max(counts)),
            slot_mapping=self.slot_mapping,
            q_lens_cpu=self.q_lens_cpu,
            kv_lens_cpu=self.kv_lens_cpu,
            max_q_len=self.max_q_len,
            max_kv_len=self.max_kv_len,
            block_size=bs,
        )
        return src, packed
