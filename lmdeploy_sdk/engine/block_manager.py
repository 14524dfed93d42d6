"""Paged KV-cache bookkeeping: which cache blocks each sequence owns.

Pure Python (no torch), so it is unit- and property-tested in milliseconds.

- Blocks hold `block_size` tokens. A block may be shared (ref count > 1): by
  prefix caching (equal leading full blocks of different sequences) or by fork.
- Writing into a shared block first copies it (copy-on-write); the copy is
  returned to the caller, which must copy the cache tensors before the step.
- Prefix caching: each full block gets a hash chained over all tokens before it.
  A freed hashed block keeps its hash and content and goes to the back of the
  free list (LRU), so a later prompt with the same prefix can take it back;
  allocation evicts from the front, unhashed blocks first.
"""
from __future__ import annotations

from collections import OrderedDict

from lmdeploy_sdk.engine.sequence import Sequence


class OutOfBlocks(RuntimeError):
    """Raised when an allocation is attempted without checking capacity first (a bug)."""


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = False):
        if num_blocks <= 0:
            raise ValueError(f"num_blocks={num_blocks} must be > 0")
        if block_size <= 0:
            raise ValueError(f"block_size={block_size} must be > 0")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_count = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.block_tokens: list[tuple | None] = [None] * num_blocks  # as _content gives it
        self.hash_to_block: dict[int, int] = {}
        self.free_blocks: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))

    # ---- capacity -------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self.free_blocks)

    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        """New blocks that writing the next `num_new_tokens` tokens of `seq` takes."""
        bs = self.block_size
        end = seq.num_computed + num_new_tokens
        need = max(0, -(-end // bs) - len(seq.block_table))
        first = seq.num_computed // bs
        if first < len(seq.block_table) and num_new_tokens > 0:
            if self.ref_count[seq.block_table[first]] > 1:
                need += 1  # copy-on-write of the partly filled shared block
        return need

    def can_append(self, seq: Sequence, num_new_tokens: int) -> bool:
        return self.blocks_needed(seq, num_new_tokens) <= self.num_free_blocks

    # ---- allocation -----------------------------------------------------------------
    def _allocate(self) -> int:
        if not self.free_blocks:
            raise OutOfBlocks("no free KV block (caller must check can_append first)")
        block, _ = self.free_blocks.popitem(last=False)
        self._unregister(block)
        self.ref_count[block] = 1
        return block

    def _unregister(self, block: int) -> None:
        h = self.block_hash[block]
        if h is not None:
            if self.hash_to_block.get(h) == block:
                del self.hash_to_block[h]
            self.block_hash[block] = None
            self.block_tokens[block] = None

    def _release(self, block: int) -> None:
        assert self.ref_count[block] > 0, f"double free of block {block}"
        self.ref_count[block] -= 1
        if self.ref_count[block] == 0:
            self.free_blocks[block] = None  # hashed: back of the LRU, kept for reuse
            if self.block_hash[block] is None:
                self.free_blocks.move_to_end(block, last=False)  # plain: reused first

    def append_slots(self, seq: Sequence, num_new_tokens: int) -> list[tuple[int, int]]:
        """Make room to write the next `num_new_tokens` tokens; returns (src, dst) block copies."""
        if self.blocks_needed(seq, num_new_tokens) > self.num_free_blocks:
            raise OutOfBlocks(f"sequence {seq.seq_id} needs more blocks than are free")
        copies = []
        bs = self.block_size
        first = seq.num_computed // bs
        if first < len(seq.block_table) and num_new_tokens > 0:
            block = seq.block_table[first]
            if self.ref_count[block] > 1:
                new = self._allocate()
                self.ref_count[block] -= 1
                seq.block_table[first] = new
                copies.append((block, new))
            else:
                self._unregister(block)  # its content is about to change
            del seq.block_hashes[first:]
        end = seq.num_computed + num_new_tokens
        while len(seq.block_table) * bs < end:
            seq.block_table.append(self._allocate())
        return copies

    # ---- prefix caching -------------------------------------------------------------
    @staticmethod
    def _chain(parent: int | None, tokens: tuple) -> int:
        return hash((parent, tokens))

    def _content(self, seq: Sequence, i: int) -> tuple:
        """What block i of `seq` holds: its tokens, and the content keys of any embeddings in it
        (the same placeholder tokens with another image are other content)."""
        bs = self.block_size
        tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
        if not seq.embedding_spans:
            return tokens
        return tokens, seq.span_keys(i * bs, (i + 1) * bs)

    def match_prefix(self, seq: Sequence) -> int:
        """Take cached blocks for the leading uncomputed full blocks of `seq`; returns tokens reused.

        At least one token is always left to compute (its logits are needed).
        """
        if not self.enable_prefix_caching:
            return 0
        bs = self.block_size
        i = seq.num_computed // bs
        if seq.num_computed % bs or len(seq.block_table) != i or len(seq.block_hashes) != i:
            return 0
        parent = seq.block_hashes[-1] if i else None
        reused = 0
        while (i + 1) * bs <= len(seq.token_ids) - 1:
            tokens = self._content(seq, i)
            h = self._chain(parent, tokens)
            block = self.hash_to_block.get(h)
            if block is None or self.block_tokens[block] != tokens:
                break
            if self.ref_count[block] == 0:
                del self.free_blocks[block]
            self.ref_count[block] += 1
            seq.block_table.append(block)
            seq.block_hashes.append(h)
            parent = h
            i += 1
            reused += bs
        seq.num_computed += reused
        return reused

    def register_full_blocks(self, seq: Sequence, known_tokens: int | None = None) -> None:
        """Hash the sequence's computed full blocks so later prompts can reuse them.

        known_tokens: only the first this many tokens are final (the engine may have fed
        a token still being sampled on the device).
        """
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        full = min(seq.num_computed, len(seq.token_ids) if known_tokens is None else known_tokens) // bs
        parent = seq.block_hashes[-1] if seq.block_hashes else None
        for i in range(len(seq.block_hashes), full):
            tokens = self._content(seq, i)
            h = self._chain(parent, tokens)
            block = seq.block_table[i]
            if self.block_hash[block] is None and h not in self.hash_to_block:
                self.block_hash[block] = h
                self.block_tokens[block] = tokens
                self.hash_to_block[h] = block
            seq.block_hashes.append(h)
            parent = h

    # ---- release --------------------------------------------------------------------
    def truncate(self, seq: Sequence, num_tokens: int) -> None:
        """Keep the KV of the first `num_tokens` tokens only (e.g. a session's common prefix)."""
        num_tokens = min(num_tokens, seq.num_computed)
        keep = -(-num_tokens // self.block_size)
        for block in seq.block_table[keep:]:
            self._release(block)
        del seq.block_table[keep:]
        del seq.block_hashes[num_tokens // self.block_size :]
        seq.num_computed = num_tokens

    def free(self, seq: Sequence) -> None:
        self.truncate(seq, 0)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Let `child` share all of `parent`'s KV (copy-on-write on the next write)."""
        assert not child.block_table, "fork target must own no blocks"
        for block in parent.block_table:
            self.ref_count[block] += 1
        child.block_table = list(parent.block_table)
        child.block_hashes = list(parent.block_hashes)
        child.num_computed = parent.num_computed

    # ---- invariants -----------------------------------------------------------------
    def check_invariants(self, live: list[Sequence]) -> None:
        """Every reference is owned by a live sequence; free <=> unreferenced; hashes consistent."""
        refs = [0] * self.num_blocks
        for seq in live:
            assert len(seq.block_table) * self.block_size >= seq.num_computed, seq
            for block in seq.block_table:
                refs[block] += 1
        assert refs == self.ref_count, "block ref counts differ from the live block tables"
        for block in range(self.num_blocks):
            assert (self.ref_count[block] == 0) == (block in self.free_blocks), block
        for h, block in self.hash_to_block.items():
            assert self.block_hash[block] == h
