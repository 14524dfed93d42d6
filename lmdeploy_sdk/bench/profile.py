"""Where one engine step's device time goes: per-kernel times from torch's profiler.

The step is synthetic: `batch` sequences at `context` tokens each, every one adding
`new_tokens` (1: a decode step; = context: a whole-prompt prefill), over the engine's
own KV cache blocks, then the logits of each sequence's last row and their argmax, as
a greedy step ends. It runs eagerly (no CUDA graph), on the engine thread between
steps, on blocks it takes from the block manager like a request would (free ones;
prefix-cached content in them is evicted) and gives back after; the cache contents are
whatever the blocks hold (speed does not depend on them); the input ids are random.
"""
from __future__ import annotations

import time
from collections import defaultdict

import torch

from lmdeploy_sdk import ops
from lmdeploy_sdk.engine.engine import Engine
from lmdeploy_sdk.engine.sequence import Sequence


def _take_blocks(engine: Engine, batch: int, context: int) -> list[Sequence]:
    """`batch` placeholder sequences holding `context` tokens' worth of free KV blocks each."""
    bs = engine.bm.block_size
    need = batch * -(-context // bs)
    if need > engine.bm.num_free_blocks:
        raise ValueError(
            f"batch={batch} x context={context} needs {need} KV blocks of {bs} tokens; "
            f"{engine.bm.num_free_blocks} of the cache's {engine.bm.num_blocks} are free"
        )
    # random ids (the specials below 1000 left out): GEMM times depend on the data (a batch
    # of identical rows ran the same step's cuBLAS projections ~10% faster on an H200)
    ids = torch.randint(1000, engine.vocab_size, (batch, context)).tolist()
    seqs = [Sequence(seq_id=-1 - b, token_ids=ids[b]) for b in range(batch)]
    for seq in seqs:
        engine.bm.append_slots(seq, context)
    return seqs


def _kernel_times(prof: torch.profiler.profile, on_cuda: bool, iters: int) -> dict[str, list[float]]:
    """{name: [ms per step, calls per step]}: device kernels on CUDA, ops' self time on CPU."""
    agg: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for e in prof.events():
        if on_cuda and e.device_type.name == "CUDA":
            ms = e.device_time / 1e3
        elif not on_cuda and e.device_type.name == "CPU":
            ms = e.self_cpu_time_total / 1e3
        else:
            continue
        agg[e.name][0] += ms / iters
        agg[e.name][1] += 1 / iters
    return agg


def _measure(engine: Engine, seqs: list[Sequence], context: int, new_tokens: int, iters: int) -> dict:
    runner = engine.runner
    model, on_cuda = runner.model, runner.device.type == "cuda"
    batch = len(seqs)
    for seq in seqs:  # the last new_tokens of each context are this step's inputs
        seq.num_computed = context - new_tokens
    ids, positions, meta = runner.prepare_inputs([(seq, new_tokens) for seq in seqs])  # [B * new_tokens]
    last = torch.arange(new_tokens - 1, batch * new_tokens, new_tokens, device=runner.device)  # [B]

    @torch.inference_mode()
    def step() -> None:
        hidden = model(ids, positions, runner.kv_caches, meta)  # [B * new_tokens, H]
        ops.argmax(model.compute_logits(hidden.index_select(0, last)))  # as the sampler's greedy rows

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize(runner.device)

    step()  # warm up (allocations, kernel loads)
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    wall_ms = 1e3 * (time.perf_counter() - t0) / iters
    activity = torch.profiler.ProfilerActivity.CUDA if on_cuda else torch.profiler.ProfilerActivity.CPU
    with torch.profiler.profile(activities=[activity]) as prof:
        for _ in range(iters):
            step()
        sync()
    agg = _kernel_times(prof, on_cuda, iters)
    total = sum(ms for ms, _ in agg.values())
    kernels = [
        {"name": name, "ms": ms, "calls": round(calls), "share": ms / total if total else 0.0}
        for name, (ms, calls) in sorted(agg.items(), key=lambda kv: -kv[1][0])
    ]
    return {"batch": batch, "context": context, "new_tokens": new_tokens, "step_ms": wall_ms,
            "kernel_ms": total, "kernels": kernels}


def profile_step(engine: Engine, batch: int, context: int, new_tokens: int = 1, iters: int = 5) -> dict:
    """Profile the step `iters` times (after one warm-up): kernels by time, and the step's wall time."""
    if batch < 1 or iters < 1:
        raise ValueError(f"batch and iters must be >= 1, got batch={batch}, iters={iters}")
    if not 1 <= new_tokens <= context:
        raise ValueError(f"new_tokens must be in [1, context={context}], got {new_tokens}")
    if context > engine.session_len:
        raise ValueError(f"context={context} exceeds session_len={engine.session_len}")

    def run(engine: Engine) -> dict:
        seqs = _take_blocks(engine, batch, context)
        try:
            return _measure(engine, seqs, context, new_tokens, iters)
        finally:
            for seq in seqs:
                engine.bm.free(seq)

    return engine.call(run).result()
