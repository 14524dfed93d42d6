"""Drive a CausalLM the way the engine does (flat batches over a paged KV cache) and compare with HF."""
from __future__ import annotations

import random

import torch

from lmdeploy_sdk.models import CausalLM
from lmdeploy_sdk.ops import AttentionMetadata


class PagedKV:
    """Paged KV caches for one model; blocks are handed out in shuffled order so tables are non-contiguous."""

    def __init__(self, model: CausalLM, num_blocks: int = 64, block_size: int = 4, seed: int = 0) -> None:
        cfg = model.config
        dtype = model.model.embed_tokens.weight.dtype
        shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
        self.caches = [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)) for _ in range(cfg.num_layers)]
        self.block_size = block_size
        self.free = list(range(num_blocks))
        random.Random(seed).shuffle(self.free)
        self.tables: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}

    def batch(self, chunks: list[tuple[int, list[int]]]) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """Flat inputs for one step; each (seq_id, tokens) appends `tokens` to that sequence."""
        bs = self.block_size
        ids, positions, slots, q_lens, kv_lens, tables = [], [], [], [], [], []
        for seq, tokens in chunks:
            start = self.lengths.get(seq, 0)
            end = start + len(tokens)
            table = self.tables.setdefault(seq, [])
            while len(table) * bs < end:
                table.append(self.free.pop())
            ids += tokens
            positions += range(start, end)
            slots += [table[p // bs] * bs + p % bs for p in range(start, end)]
            q_lens.append(len(tokens))
            kv_lens.append(end)
            tables.append(table)
            self.lengths[seq] = end
        meta = AttentionMetadata.from_lists(q_lens, kv_lens, tables, slots, bs, torch.device("cpu"))
        return torch.tensor(ids, dtype=torch.int64), torch.tensor(positions, dtype=torch.int64), meta

    @torch.inference_mode()
    def step(self, model: CausalLM, chunks: list[tuple[int, list[int]]]) -> list[torch.Tensor]:
        """Run one flat forward; the logits [len(tokens), V] of each chunk, in order."""
        input_ids, positions, meta = self.batch(chunks)
        logits = model.compute_logits(model(input_ids, positions, self.caches, meta)).float()  # [T, V]
        return list(logits.split(meta.q_lens_cpu))


@torch.inference_mode()
def hf_logits(reference: torch.nn.Module, tokens: list[int]) -> torch.Tensor:
    """The transformers model's logits [len(tokens), V] for one sequence."""
    return reference(torch.tensor([tokens])).logits[0].float()


def random_tokens(n: int, vocab_size: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab_size, (n,), generator=gen).tolist()


def assert_logits_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
