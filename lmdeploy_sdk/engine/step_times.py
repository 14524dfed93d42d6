"""Wall-clock timings of the engine's steps, to see where a run's time goes.

The loop launches step N+1 before it waits for step N (engine.py), so while the GPU
is the bottleneck the time from one step's scheduling to the next is that step's
device time, and the loop's wait for a step's tokens is host time the GPU did not
need. A step that waits little while its period grows is bound by host work.
No torch here: records are plain numbers, filled on the engine thread.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from lmdeploy_sdk.engine.scheduler import ScheduledBatch

# Upper ends (exclusive) of the decode-batch buckets of `StepTimes.summary`.
DECODE_BUCKETS = (8, 64, 256, 512, 768)


@dataclass
class StepRecord:
    start_s: float  # time.perf_counter() when the step was scheduled
    decode_rows: int  # sequences that feed one token
    prefill_tokens: int  # prompt tokens computed (whole prompts or chunks)
    context_tokens: int  # cached tokens the decode rows attend over (the KV a step reads)
    host_wait_s: float = 0.0  # time the loop blocked on this step's sampled tokens
    gpu_s: float | None = None  # device time of the step (CUDA events; None off CUDA)
    gpu_idle_before_s: float | None = None  # device idle between the previous step and this one


class StepTimes:
    """Collects one record per launched step; `summary()` buckets them."""

    def __init__(self) -> None:
        self.records: list[StepRecord] = []

    def launched(self, batch: ScheduledBatch) -> StepRecord:
        decode = [seq for seq, n in batch.items if n == 1 and seq.is_decoding]
        record = StepRecord(
            start_s=time.perf_counter(),
            decode_rows=len(decode),
            prefill_tokens=sum(n for _, n in batch.items) - len(decode),
            context_tokens=sum(seq.num_computed for seq in decode),
        )
        self.records.append(record)
        return record

    def summary(self) -> dict:
        """Steps with prompt tokens, then decode-only steps by batch size (each step's
        period is the time to the next step's scheduling, so the last step is left out)."""
        timed = [(r, b.start_s - r.start_s) for r, b in zip(self.records, self.records[1:])]
        prefill = [(r, dt) for r, dt in timed if r.prefill_tokens]
        decode = [(r, dt) for r, dt in timed if not r.prefill_tokens and r.decode_rows]
        out = {
            "steps": len(timed),
            "seconds": sum(dt for _, dt in timed),
            "gpu_seconds": _sum([r.gpu_s for r, _ in timed]),
            "gpu_idle_seconds": _sum([r.gpu_idle_before_s for r, _ in timed]),
            "with_prompt_tokens": {
                "steps": len(prefill),
                "seconds": sum(dt for _, dt in prefill),
                "gpu_seconds": _sum([r.gpu_s for r, _ in prefill]),
                "prompt_tokens": sum(r.prefill_tokens for r, _ in prefill),
                "decode_rows_mean": _mean([r.decode_rows for r, _ in prefill]),
            },
            "decode_only": [],
        }
        lows = (1, *DECODE_BUCKETS)
        highs = (*DECODE_BUCKETS, None)
        for lo, hi in zip(lows, highs):
            sel = [(r, dt) for r, dt in decode if r.decode_rows >= lo and (hi is None or r.decode_rows < hi)]
            if not sel:
                continue
            out["decode_only"].append({
                "rows": f"{lo}-{hi - 1}" if hi else f"{lo}+",
                "steps": len(sel),
                "seconds": sum(dt for _, dt in sel),
                "mean_ms": 1e3 * _mean([dt for _, dt in sel]),
                "mean_rows": _mean([r.decode_rows for r, _ in sel]),
                "mean_context_tokens": _mean([r.context_tokens for r, _ in sel]),
                "mean_host_wait_ms": 1e3 * _mean([r.host_wait_s for r, _ in sel]),
                "mean_gpu_ms": _mean_ms([r.gpu_s for r, _ in sel]),
                "mean_gpu_idle_before_ms": _mean_ms([r.gpu_idle_before_s for r, _ in sel]),
            })
        return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _sum(seconds: list[float | None]) -> float | None:
    """Sum of the values measured (None: none were, e.g. on CPU)."""
    known = [s for s in seconds if s is not None]
    return sum(known) if known else None


def _mean_ms(seconds: list[float | None]) -> float | None:
    """Mean in ms of the values measured (None: none were, e.g. on CPU)."""
    known = [s for s in seconds if s is not None]
    return 1e3 * _mean(known) if known else None
