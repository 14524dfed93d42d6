"""`lmdeploy-sdk bench latency|throughput|profile`: print a table, write JSON with the run's context."""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import subprocess
import tempfile
from pathlib import Path

from lmdeploy_sdk.bench.workload import MIXES


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure decode latency and offline throughput; profile one step; "
                       "guided decoding's cost")
    p.add_argument("kind", choices=["latency", "throughput", "profile", "guided", "vision"])
    p.add_argument("model", nargs="?", default=None,
                   help="model directory or embedded name; with --shape, the tokenizer source")
    p.add_argument("--shape", default=None, help="random weights of a named shape, e.g. llama3-8b")
    p.add_argument("--w4", action="store_true",
                   help="(with --shape) random 4-bit AWQ weights instead of 16-bit (group --w-group-size)")
    p.add_argument("--w-group-size", type=int, default=128, help="(with --w4) the 4-bit group size (default 128)")
    p.add_argument("--model-format", default=None, choices=["hf", "awq", "gptq"],
                   help="weights of MODEL: hf (float), awq or gptq (4-bit); default: detected")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=512)
    p.add_argument("--num-prompts", type=int, default=1000)
    p.add_argument("--mix", default="sharegpt", choices=MIXES,
                   help="(throughput) the request mix: sharegpt-like lengths or long contexts (bench/workload.py)")
    p.add_argument("--session-len", type=int, default=None,
                   help="max tokens of a sequence (with --shape, also the shape's positions if larger)")
    p.add_argument("--quant-policy", type=int, default=0, choices=[0, 4, 8],
                   help="KV cache: 0 = 16-bit, 8 = int8, 4 = int4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hf-requests", type=int, default=0,
                   help="also time transformers generate() on the first N requests (throughput)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    p.add_argument("--max-batch-size", type=int, default=None)
    p.add_argument("--cache-max-entry-count", type=float, default=0.8)
    p.add_argument("--device", default=None)
    p.add_argument("--json", type=Path, default=None, help="write results here")
    p.add_argument("--step-times", action="store_true",
                   help="(throughput) also time every engine step and summarise them by batch size")
    p.add_argument("--batch", type=int, default=1, help="(profile, guided) sequences in the step")
    p.add_argument("--vision-batch-size", type=int, default=8,
                   help="(vision) images the vision tower encodes at once (VisionConfig.max_batch_size)")
    p.add_argument("--context", type=int, default=512, help="(profile) context tokens of each sequence")
    p.add_argument("--prefill", action="store_true",
                   help="(profile) every sequence prefills its whole context (default: one decode token)")
    p.set_defaults(func=run)


def _context(args: argparse.Namespace) -> dict:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return {
        "command": "lmdeploy-sdk " + " ".join(args.argv),
        "gpu": gpu,
        "date": datetime.date.today().isoformat(),
        "git_commit": commit or "unknown",
        "torch": torch.__version__,
    }


def run(args: argparse.Namespace) -> int:
    import torch

    if args.step_times and args.kind != "throughput":
        raise SystemExit(f"--step-times applies to `bench throughput`, not `bench {args.kind}`")
    if args.prefill and args.kind != "profile":
        raise SystemExit(f"--prefill applies to `bench profile`, not `bench {args.kind}`")
    if args.w4 and not args.shape:
        raise SystemExit("--w4 needs --shape (random 4-bit weights of a named shape); a 4-bit model "
                         "directory is detected by itself")
    from lmdeploy_sdk.async_engine import AsyncEngine
    from lmdeploy_sdk.bench import runs
    from lmdeploy_sdk.bench.guided import guided_overhead
    from lmdeploy_sdk.bench.profile import profile_step
    from lmdeploy_sdk.bench.vision import vision_bench, write_llava_shape
    from lmdeploy_sdk.bench.workload import request_mix, write_shape
    from lmdeploy_sdk.engine.factory import load
    from lmdeploy_sdk.engine.step_times import StepTimes
    from lmdeploy_sdk.messages import TurbomindEngineConfig
    from lmdeploy_sdk.model_source import resolve_model_path
    from lmdeploy_sdk.vl.config import VisionConfig

    cache = args.cache_max_entry_count
    cfg = TurbomindEngineConfig(dtype=args.dtype, max_batch_size=args.max_batch_size, device=args.device,
                                model_format=args.model_format, session_len=args.session_len,
                                quant_policy=args.quant_policy,
                                cache_max_entry_count=int(cache) if cache >= 1 else cache)
    with tempfile.TemporaryDirectory() as tmp:
        vision_config = None
        if args.shape:  # MODEL only lends its tokenizer (any directory holding one)
            src = Path(args.model) if args.model and Path(args.model).is_dir() else resolve_model_path(args.model)
            if args.kind == "vision":
                model_dir = write_llava_shape(args.shape, src, Path(tmp) / args.shape)
            else:
                model_dir = write_shape(args.shape, src, Path(tmp) / args.shape,
                                        int4_group=args.w_group_size if args.w4 else None,
                                        max_positions=args.session_len)
        else:
            model_dir = resolve_model_path(args.model, args.model_format)
        if args.kind == "vision":
            vision_config = VisionConfig(max_batch_size=args.vision_batch_size)
        loaded = load(model_dir, cfg, random_weights=bool(args.shape), vision_config=vision_config)
        engine = AsyncEngine(loaded=loaded)
        vocab = loaded.engine.vocab_size
        result = {"context": _context(args), "model": (args.shape + (f" w4 g{args.w_group_size}" if args.w4 else ""))
              if args.shape else str(model_dir)}
        stats = loaded.engine.stats()
        result["kv_cache"] = {"blocks": stats.blocks_total, "block_tokens": loaded.backend_config.cache_block_seq_len,
                              "bits": stats.kv_cache_bits}
        try:
            if args.kind == "profile":
                r = profile_step(loaded.engine, args.batch, args.context, args.context if args.prefill else 1)
            elif args.kind == "guided":
                r = guided_overhead(loaded, args.batch, args.output_len)
            elif args.kind == "vision":
                if loaded.vision is None:
                    raise SystemExit("bench vision needs a vision-language model (or --shape llava-1.5-7b)")
                r = vision_bench(loaded, args.num_prompts, args.output_len, args.seed)
            elif args.kind == "latency":
                r = runs.latency(engine, args.input_len, args.output_len, vocab)
                dev = loaded.engine.runner.device
                if dev.type == "cuda":
                    bw = runs.copy_bandwidth(dev)
                    step = runs.decode_bytes(loaded, args.input_len + args.output_len // 2)
                    r["copy_bandwidth_GBs"] = bw / 1e9
                    r["roofline_tok_s"] = bw / step
                    r["fraction_of_roofline"] = r["decode_tok_s"] / r["roofline_tok_s"]
            else:
                reqs = request_mix(args.mix, args.num_prompts, vocab, args.seed)
                times = StepTimes() if args.step_times else None
                if times is not None:
                    loaded.engine.record_step_times(times).result()
                r = runs.throughput(loaded, reqs)
                if times is not None:
                    loaded.engine.record_step_times(None).result()
                    r["step_times"] = times.summary()
                if loaded.engine.runner.device.type == "cuda":
                    r.update(runs.throughput_context(loaded, reqs))
                    r["fraction_of_bound"] = r["output_tok_s"] / r["serial_bound_output_tok_s"]
                    r["fraction_of_projection_bound"] = r["output_tok_s"] / r["projection_bound_output_tok_s"]
                if args.hf_requests:
                    r["ours_on_hf_subset"] = runs.throughput(loaded, reqs[: args.hf_requests])
            device, dtype = loaded.engine.runner.device, loaded.engine.runner.dtype
        finally:
            loaded.close()
            del engine, loaded
            gc.collect()  # the engine's objects form cycles; free its GPU memory now
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        result[args.kind] = r
        if args.json:  # keep our figures even if the baseline below fails
            args.json.write_text(json.dumps(result, indent=2))
        if args.kind == "throughput" and args.hf_requests:  # after ours is gone: the GPU is all its
            r["transformers"] = runs.hf_generate_throughput(model_dir, reqs[: args.hf_requests], device, dtype)
            r["ratio_vs_transformers"] = r["ours_on_hf_subset"]["output_tok_s"] / r["transformers"]["output_tok_s"]
    result[args.kind] = r
    if args.kind == "profile":
        _print_profile(r)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    width = max(len(k) for k in r)
    for k, v in r.items():
        if k == "step_times":
            continue
        shown = f"{v:.3f}" if isinstance(v, float) else json.dumps(v) if isinstance(v, dict) else v
        print(f"{k:<{width}}  {shown}")
    if "step_times" in r:
        _print_step_times(r["step_times"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _print_profile(r: dict, top: int = 25) -> None:
    kind = "prefill" if r["new_tokens"] > 1 else "decode"
    print(f"{kind} step: batch {r['batch']}, context {r['context']}: {r['step_ms']:.2f} ms wall, "
          f"{r['kernel_ms']:.2f} ms in kernels")
    print(f"{'ms':>9} {'calls':>6} {'share':>6}  kernel")
    for k in r["kernels"][:top]:
        print(f"{k['ms']:>9.3f} {k['calls']:>6} {100 * k['share']:>5.1f}%  {k['name'][:100]}")


def _print_step_times(summary: dict) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    pre = summary["with_prompt_tokens"]
    gpu = "" if summary["gpu_seconds"] is None else (
        f"; GPU busy {summary['gpu_seconds']:.2f} s, idle between steps {summary['gpu_idle_seconds'] or 0:.2f} s")
    print(f"\nsteps: {summary['steps']} in {summary['seconds']:.2f} s{gpu}; with prompt tokens: {pre['steps']} "
          f"in {pre['seconds']:.2f} s ({pre['prompt_tokens']} prompt tokens)")
    print(f"{'decode rows':>12} {'steps':>6} {'seconds':>8} {'ms/step':>8} {'rows':>6} {'KV tokens':>10} "
          f"{'host wait ms':>12} {'GPU ms':>8} {'GPU idle ms':>11}")
    for b in summary["decode_only"]:
        print(f"{b['rows']:>12} {b['steps']:>6} {b['seconds']:>8.2f} {b['mean_ms']:>8.2f} {b['mean_rows']:>6.0f} "
              f"{b['mean_context_tokens']:>10.0f} {b['mean_host_wait_ms']:>12.2f} {ms(b['mean_gpu_ms']):>8} "
              f"{ms(b['mean_gpu_idle_before_ms']):>11}")
