"""Continuous batching with a token budget, chunked prefill and preemption.

Pure Python (no torch). Each `schedule()` builds one step:
1. every running sequence that is decoding gets its one token, taking a new block
   when it crosses a block boundary; when blocks run out, idle sessions' caches are
   dropped first, then the newest running sequences are preempted (their KV is
   freed and they go back to the front of the queue to be recomputed);
2. running sequences still in prefill, then waiting ones (while the batch has room
   under `max_batch_size`), get prefill chunks within `max_prefill_tokens`
   (dynamic split & fuse: long prompts are split, chunks ride along with decodes).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from lmdeploy_sdk.engine.block_manager import BlockManager
from lmdeploy_sdk.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    # (sequence, number of its tokens computed this step), in batch order
    items: list[tuple[Sequence, int]] = field(default_factory=list)
    # (src_block, dst_block) copies to run before the step (copy-on-write)
    copies: list[tuple[int, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.items)


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_batch_size: int,
        max_prefill_tokens: int,
        evict_idle: Callable[[int], bool] | None = None,
    ):
        """evict_idle(num_blocks) drops idle sessions' KV to free blocks; returns False if none left."""
        self.bm = block_manager
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.evict_idle = evict_idle or (lambda n: False)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._arrivals = 0
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        seq.arrival = self._arrivals
        self._arrivals += 1
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out of the queues (finished or aborted); its blocks stay with it."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _make_room(self, seq: Sequence, num_tokens: int, batch: ScheduledBatch) -> bool:
        """Free blocks until `seq` can write `num_tokens`; False if `seq` itself had to go."""
        while not self.bm.can_append(seq, num_tokens):
            if self.evict_idle(self.bm.blocks_needed(seq, num_tokens) - self.bm.num_free_blocks):
                continue
            victim = max(self.running, key=lambda s: s.arrival)
            self._preempt(victim, batch)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence, batch: ScheduledBatch) -> None:
        self.running.remove(seq)
        for i, (s, _) in enumerate(batch.items):
            if s is seq:
                del batch.items[i]
                break
        self.bm.free(seq)
        self.num_preemptions += 1
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        batch.preempted.append(seq)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        # 1. decodes, oldest first so preemption hits the newest
        # (status, not list membership: a sequence preempted meanwhile is WAITING again)
        for seq in sorted(self.running, key=lambda s: s.arrival):
            if seq.status is not SequenceStatus.RUNNING or not seq.is_decoding:
                continue
            if self._make_room(seq, 1, batch):
                batch.copies += self.bm.append_slots(seq, 1)
                batch.items.append((seq, 1))
        # 2. prefill chunks: running first, then admit waiting
        budget = self.max_prefill_tokens
        for seq in sorted(self.running, key=lambda s: s.arrival):
            if budget <= 0:
                break
            if seq.status is not SequenceStatus.RUNNING or seq.is_decoding or seq.num_uncomputed == 0:
                continue  # (nothing to compute: its next token is still being sampled)
            n = min(seq.num_uncomputed, budget)
            if not self._make_room(seq, n, batch):
                continue
            batch.copies += self.bm.append_slots(seq, n)
            batch.items.append((seq, n))
            budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_batch_size:
            seq = self.waiting[0]
            matched = self.bm.match_prefix(seq) if not seq.block_table else 0
            n = min(seq.num_uncomputed, budget)
            if not self.bm.can_append(seq, n):
                if matched:  # hold no cached blocks while queued
                    self.bm.free(seq)
                # Free idle sessions' caches for new work; never preempt running work for it.
                if not self.evict_idle(self.bm.blocks_needed(seq, n) - self.bm.num_free_blocks):
                    break
                continue
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.copies += self.bm.append_slots(seq, n)
            batch.items.append((seq, n))
            budget -= n
        return batch
