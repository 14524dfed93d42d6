"""The measurements: batch-1 decode latency against the memory roofline, and offline throughput."""
from __future__ import annotations

import asyncio
import time

import torch

from lmdeploy_sdk.async_engine import AsyncEngine
from lmdeploy_sdk.bench.workload import BenchRequest
from lmdeploy_sdk.engine import graph_sizes
from lmdeploy_sdk.engine.factory import LoadedModel
from lmdeploy_sdk.messages import GenerationConfig
from lmdeploy_sdk.quant.linear import Int4Linear, int4_modules
from lmdeploy_sdk.sync_pipeline import Pipeline


def copy_bandwidth(device: torch.device, nbytes: int = 2 * 2**30, iters: int = 10) -> float:
    """Bytes/s moved (read + written) by a large device-to-device copy."""
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(iters):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    return 2 * src.numel() * iters / (time.perf_counter() - t)


def model_weight_bytes(model: torch.nn.Module) -> int:
    """Device bytes of every weight: parameters, and 4-bit layers' packed values and scales."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return params + sum(m.weight.nbytes for m in int4_modules(model))


def linear_weight_count(model: torch.nn.Module) -> int:
    """Weights (N x K elements) of the decoder layers' projections, 16-bit or 4-bit: 2 FLOPs
    each per row."""
    return sum(m.weight.shape[0] * m.weight.shape[1] for m in model.model.layers.modules()
               if isinstance(m, (torch.nn.Linear, Int4Linear)))


def step_weight_bytes(loaded: LoadedModel) -> int:
    """Weight bytes one decode step must read: every weight but the embedding table, of
    which a step reads one row per token (unless it doubles as the LM head)."""
    model = loaded.engine.runner.model
    weights = model_weight_bytes(model)
    if model.lm_head is not None:
        embed = model.model.embed_tokens.weight
        weights -= embed.numel() * embed.element_size()
    return weights


def kv_bytes_per_token(loaded: LoadedModel) -> int:
    """KV-cache bytes of one context token, over all layers."""
    model = loaded.engine.runner.model
    cfg = model.config
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * next(model.parameters()).element_size()


def decode_bytes(loaded: LoadedModel, context: int) -> int:
    """Bytes one decode step must read: its weights plus the KV of `context` tokens."""
    return step_weight_bytes(loaded) + kv_bytes_per_token(loaded) * context


def gemm_rate(device: torch.device, dtype: torch.dtype, iters: int = 20) -> float:
    """FLOP/s of a large GEMM ([8192, 4096] x [4096, 14336], an MLP projection of a big batch)."""
    a = torch.randn(8192, 4096, device=device, dtype=dtype)
    b = torch.randn(4096, 14336, device=device, dtype=dtype)
    a @ b
    torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * 8192 * 4096 * 14336 * iters / (time.perf_counter() - t)


def throughput_bound(
    loaded: LoadedModel, requests: list[BenchRequest], copy_bytes_per_s: float, flop_per_s: float
) -> float:
    """Output tokens/s of an ideal engine that runs attention and GEMMs one after the other.

    Every request starts at once; step t decodes every request with more than t output
    tokens left and takes max(its weights at copy bandwidth, its GEMMs at flop_per_s)
    plus its KV reads at copy bandwidth; the prompts' GEMMs take their FLOPs at
    flop_per_s. Nothing else (attention FLOPs, launches, scheduling) is charged.
    """
    model = loaded.engine.runner.model
    weight_bytes = step_weight_bytes(loaded)
    head = model.lm_head.weight if model.lm_head is not None else model.model.embed_tokens.weight
    head_params = head.numel()
    layer_params = linear_weight_count(model)  # (norms left out: negligible)
    kv_token = kv_bytes_per_token(loaded)
    ins = [len(r.prompt_ids) for r in requests]
    outs = [r.output_len for r in requests]
    seconds = 2 * layer_params * sum(ins) / flop_per_s
    for t in range(max(outs, default=0)):
        live = [i + t for i, o in zip(ins, outs) if o > t]  # context of each decoding request
        gemm = 2 * (layer_params + head_params) * len(live) / flop_per_s
        seconds += max(weight_bytes / copy_bytes_per_s, gemm) + kv_token * sum(live) / copy_bytes_per_s
    return sum(outs) / seconds if seconds else 0.0


def measure_projections(loaded: LoadedModel, max_rows: int, prefill_rows: int) -> tuple[dict, dict]:
    """(layer_seconds, head_seconds) for projection_bound at the decode graphs' candidate
    sizes up to max_rows; the layers also at prefill_rows."""
    model = loaded.engine.runner.model
    fixed, swept = graph_sizes.candidate_sizes(max_rows)
    sizes = fixed + swept
    device = loaded.engine.runner.device
    layers = graph_sizes.projection_costs(model, sorted({*sizes, prefill_rows}), device)
    head = model.lm_head.weight if model.lm_head is not None else model.model.embed_tokens.weight
    return layers, graph_sizes.linear_costs([(head, None)], sizes, device)


def projection_bound(
    loaded: LoadedModel,
    requests: list[BenchRequest],
    copy_bytes_per_s: float,
    layer_seconds: dict[int, float],
    head_seconds: dict[int, float],
    prefill_rows: int,
) -> float:
    """Output tokens/s of an engine whose only costs are its projections, at their measured
    times, and its KV reads at copy bandwidth: what our own GEMMs allow.

    layer_seconds / head_seconds: {rows: seconds} of every decoder layer's projections /
    the vocabulary projection (graph_sizes.linear_costs). A decode step of n rows pays
    each at the cheapest measured size >= n (as a graph pads the layers' rows). Prompts
    pay the layers' per-row time at prefill_rows (the prefill chunk) and no head. The
    schedule is throughput_bound's: every request starts at once.
    """
    if prefill_rows not in layer_seconds:
        raise ValueError(f"layer_seconds must be measured at the prefill chunk ({prefill_rows} rows)")

    def padded(costs: dict[int, float], n: int) -> float:
        fits = [c for m, c in costs.items() if m >= n]
        if not fits:
            raise ValueError(f"no projection time measured for a decode step of {n} rows")
        return min(fits)

    kv_token = kv_bytes_per_token(loaded)
    ins = [len(r.prompt_ids) for r in requests]
    outs = [r.output_len for r in requests]
    seconds = sum(ins) * layer_seconds[prefill_rows] / prefill_rows
    for t in range(max(outs, default=0)):
        live = [i + t for i, o in zip(ins, outs) if o > t]  # context of each decoding request
        n = len(live)
        seconds += padded(layer_seconds, n) + padded(head_seconds, n) + kv_token * sum(live) / copy_bytes_per_s
    return sum(outs) / seconds if seconds else 0.0


def throughput_context(loaded: LoadedModel, requests: list[BenchRequest]) -> dict:
    """The GPU figures a throughput run is judged by: copy bandwidth, GEMM rate, the serial
    and projection bounds of `requests`, and the decode graphs' sizes. (A function of its
    own: none of the engine's objects may outlive it, the baseline needs the GPU after.)"""
    engine = loaded.engine
    device, dtype = engine.runner.device, engine.runner.dtype
    bw, flops = copy_bandwidth(device), gemm_rate(device, dtype)
    chunk = engine.scheduler.max_prefill_tokens
    layer_s, head_s = measure_projections(loaded, min(len(requests), engine.scheduler.max_batch_size), chunk)
    return {
        "copy_bandwidth_GBs": bw / 1e9,
        "gemm_TFLOPs": flops / 1e12,
        "serial_bound_output_tok_s": throughput_bound(loaded, requests, bw, flops),
        "projection_bound_output_tok_s": projection_bound(loaded, requests, bw, layer_s, head_s, chunk),
        "decode_graph_sizes": list(engine.runner.graphs.sizes) if engine.runner.graphs is not None else [],
    }


async def _one(engine: AsyncEngine, ids: list[int], gen: GenerationConfig) -> tuple[float, float, int]:
    """(time to first token, total time, tokens) of one request."""
    t0 = time.perf_counter()
    first, n = None, 0
    async for r in engine.generate(ids, gen):
        if r.token_ids and first is None:
            first = time.perf_counter() - t0
        n += len(r.token_ids)
    return first or 0.0, time.perf_counter() - t0, n


def latency(engine: AsyncEngine, input_len: int, output_len: int, vocab: int, runs: int = 3) -> dict:
    """Batch-1 decode: prompt input_len, output_len new tokens with ignore_eos."""
    ids = [1000 + (i * 7919) % (vocab - 1000) for i in range(input_len)]
    gen = GenerationConfig(max_new_tokens=output_len, ignore_eos=True)
    asyncio.run(_one(engine, ids, GenerationConfig(max_new_tokens=8, ignore_eos=True)))  # warm up
    best = None
    for _ in range(runs):
        ttft, total, n = asyncio.run(_one(engine, ids, gen))
        decode_tps = (n - 1) / (total - ttft)
        if best is None or decode_tps > best["decode_tok_s"]:
            best = {"ttft_s": ttft, "total_s": total, "tokens": n, "decode_tok_s": decode_tps}
    return best


def throughput(loaded: LoadedModel, requests: list[BenchRequest]) -> dict:
    """All requests in one `Pipeline.infer` call (token-id prompts); output tokens per second of wall time."""
    pipe = Pipeline(loaded=loaded)  # borrows the model: closing it is the caller's
    gens = [GenerationConfig(max_new_tokens=r.output_len, ignore_eos=True) for r in requests]
    stats = loaded.engine.stats
    preempted_before = stats().preemptions_total
    t0 = time.perf_counter()
    responses = pipe.infer([r.prompt_ids for r in requests], gens)
    elapsed = time.perf_counter() - t0
    errors = [r.error_message for r in responses if r.finish_reason == "error"]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(requests)} bench requests failed, first: {errors[0]}")
    out_tokens = sum(len(r.token_ids) for r in responses)
    in_tokens = sum(len(r.prompt_ids) for r in requests)
    return {
        "requests": len(requests),
        "input_tokens": in_tokens,
        "output_tokens": out_tokens,
        "elapsed_s": elapsed,
        "output_tok_s": out_tokens / elapsed,
        "total_tok_s": (in_tokens + out_tokens) / elapsed,
        "preemptions": stats().preemptions_total - preempted_before,
        "kv_cache_blocks": stats().blocks_total,
        "weight_GiB": model_weight_bytes(loaded.engine.runner.model) / 2**30,
    }


def hf_generate_throughput(model_dir, requests: list[BenchRequest], device, dtype, batch_size: int = 32) -> dict:
    """transformers generate() on the same requests (left-padded batches, greedy, no early stop)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(model_dir)
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config  # a --w4 shape: transformers runs it in 16 bits
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    t0 = time.perf_counter()
    out_tokens = 0
    order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt_ids))
    for start in range(0, len(order), batch_size):
        chunk = [requests[i] for i in order[start : start + batch_size]]
        width = max(len(r.prompt_ids) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(chunk):
            ids[j, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[j, width - len(r.prompt_ids):] = 1
        new = max(r.output_len for r in chunk)
        with torch.no_grad():
            model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                           do_sample=False, pad_token_id=0)
        out_tokens += sum(r.output_len for r in chunk)  # tokens the requests asked for
    elapsed = time.perf_counter() - t0
    return {"requests": len(requests), "output_tokens": out_tokens, "elapsed_s": elapsed,
            "output_tok_s": out_tokens / elapsed, "batch_size": batch_size}
