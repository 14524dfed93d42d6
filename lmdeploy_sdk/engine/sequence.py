"""A sequence: the token history and KV-block table of one request or stateful session.

No torch here: the scheduler and block manager work on these alone.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued, no KV needed yet (or preempted: KV dropped, will recompute)
    RUNNING = "running"  # scheduled in the batch
    IDLE = "idle"  # a stateful session between requests: KV kept, nothing to compute
    FINISHED = "finished"


@dataclass(frozen=True)
class EmbeddingSpan:
    """Tokens [start, end) of a sequence whose inputs are given embeddings (an image's features,
    in place of its placeholder tokens); `key` names their content, for prefix-cache hashes."""

    start: int
    end: int
    key: int
    embeddings: Any = field(compare=False, repr=False)  # [end - start, hidden] (a tensor; opaque here)


@dataclass(eq=False)
class Sequence:
    seq_id: int
    token_ids: list[int]
    # Tokens whose K/V are in the cache; the rest of token_ids is still to prefill.
    num_computed: int = 0
    block_table: list[int] = field(default_factory=list)
    # Prefix-cache hash of each leading full block registered so far (a hash chain).
    block_hashes: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    # Total length at which generation must stop (prompt + max_new_tokens, <= session_len).
    max_len: int = 0
    # Admission order; preemption takes the newest first.
    arrival: int = 0
    # What the engine attaches (request state); opaque to scheduler and block manager.
    owner: Any = None
    # Sorted, disjoint, within token_ids.
    embedding_spans: list[EmbeddingSpan] = field(default_factory=list)

    def span_keys(self, start: int, end: int) -> tuple[tuple[int, int], ...]:
        """(key, start relative to `start`) of the spans that overlap tokens [start, end)."""
        return tuple((s.key, s.start - start) for s in self.embedding_spans if s.start < end and s.end > start)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def is_decoding(self) -> bool:
        """Exactly one token (the last sampled one) is waiting to be fed."""
        return self.num_uncomputed == 1


def first_span_change(old: list[EmbeddingSpan], new: list[EmbeddingSpan]) -> int:
    """Where a session's given embeddings first differ from a new prompt's (its KV is kept up to there)."""
    for a, b in zip(old, new):
        if (a.start, a.end, a.key) != (b.start, b.end, b.key):
            return min(a.start, b.start)
    if len(old) > len(new):
        return old[len(new)].start
    if len(new) > len(old):
        return new[len(old)].start
    return 1 << 62


def check_spans(spans: list[EmbeddingSpan], num_tokens: int, hidden: int) -> str | None:
    """Why a request's embedding spans cannot be fed, or None."""
    end = 0
    for span in spans:
        if not end <= span.start < span.end <= num_tokens:
            return f"embedding span [{span.start}, {span.end}) is outside the prompt or overlaps another"
        if tuple(span.embeddings.shape) != (span.end - span.start, hidden):
            return (f"embedding span [{span.start}, {span.end}) has embeddings of shape "
                    f"{tuple(span.embeddings.shape)}, expected ({span.end - span.start}, {hidden})")
        end = span.end
    return None
