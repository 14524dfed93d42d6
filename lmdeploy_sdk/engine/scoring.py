"""Perplexity scoring (Pipeline.get_ppl): a prefill that keeps every position's logits."""
from __future__ import annotations

from typing import TYPE_CHECKING

from lmdeploy_sdk.engine.sequence import Sequence

if TYPE_CHECKING:
    from lmdeploy_sdk.engine.engine import Engine


def score(engine: "Engine", token_ids: list[int], top1: list[int] | None = None) -> float:
    """Mean cross-entropy of token_ids under the model (engine thread only; see call()).
    top1, if given, gets the model's most likely next token at each position."""
    if len(token_ids) < 2:
        raise ValueError(f"get_ppl needs at least 2 tokens, got {len(token_ids)}")
    if len(token_ids) > engine.session_len:
        raise ValueError(f"input has {len(token_ids)} tokens, more than session_len={engine.session_len}")
    seq = Sequence(seq_id=engine.next_seq_id(), token_ids=list(token_ids))
    needed = engine.bm.blocks_needed(seq, len(token_ids))
    if needed > engine.bm.num_free_blocks:
        engine.evict_idle(needed - engine.bm.num_free_blocks)
    if needed > engine.bm.num_free_blocks:
        raise RuntimeError(
            f"not enough free KV blocks to score {len(token_ids)} tokens now "
            f"({needed} needed, {engine.bm.num_free_blocks} free); retry when the engine is idle"
        )
    engine.bm.append_slots(seq, len(token_ids))
    try:
        targets = token_ids[1:] + [-1]
        total = 0.0
        chunk = engine.scheduler.max_prefill_tokens
        for start in range(0, len(token_ids), chunk):
            n = min(chunk, len(token_ids) - start)
            total += engine.runner.score(seq, n, targets[start : start + n], top1)
        return total / (len(token_ids) - 1)
    finally:
        engine.bm.free(seq)
