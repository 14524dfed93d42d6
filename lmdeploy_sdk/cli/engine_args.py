"""Engine flags shared by `chat` and `serve api_server`."""
from __future__ import annotations

import argparse
import sys

from lmdeploy_sdk.messages import TurbomindEngineConfig

# LMDeploy's engine choice (also the first word of its old `chat turbomind DIR` form): this
# package has one engine, so the flag is accepted with a note.
BACKENDS = ("turbomind", "pytorch")


def note(command: str, message: str) -> None:
    """A one-line note on stderr about an LMDeploy flag or form that has no meaning here."""
    print(f"lmdeploy-sdk {command}: note: {message}", file=sys.stderr)


def add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    g.add_argument("--model-format", default=None, choices=["hf", "awq", "gptq"],
                   help="weights: hf (float), awq or gptq (4-bit); default: detected from config.json")
    g.add_argument("--tp", type=int, default=1)
    g.add_argument("--session-len", type=int, default=None)
    g.add_argument("--max-batch-size", type=int, default=None)
    g.add_argument("--cache-max-entry-count", type=float, default=0.8,
                   help="fraction of free memory for the KV cache (a value >= 1 is a number of blocks)")
    g.add_argument("--cache-block-seq-len", type=int, default=64)
    g.add_argument("--enable-prefix-caching", action="store_true")
    g.add_argument("--quant-policy", type=int, default=0, choices=[0, 4, 8],
                   help="KV cache: 0 = 16-bit, 8 = int8, 4 = int4 (4-bit weights are --model-format awq)")
    g.add_argument("--rope-scaling-factor", type=float, default=0.0)
    g.add_argument("--max-prefill-token-num", type=int, default=8192)
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    g.add_argument("--backend", default=None, choices=BACKENDS,
                   help="LMDeploy's engine choice; accepted and ignored (lmdeploy-sdk has one engine)")
    g.add_argument("--instance-num", type=int, default=None,
                   help="LMDeploy's old concurrency flag; accepted and ignored (see --max-batch-size)")


def engine_config(args: argparse.Namespace) -> TurbomindEngineConfig:
    command = getattr(args, "command", None) or "engine"
    if args.backend is not None:
        note(command, f"--backend {args.backend}: lmdeploy-sdk has one engine; the flag is ignored")
    if args.instance_num is not None:
        note(command, f"--instance-num {args.instance_num} is ignored; --max-batch-size sets how many "
                      "sequences run at once")
    cache = args.cache_max_entry_count
    if cache >= 1:
        if cache != int(cache):
            raise SystemExit(f"--cache-max-entry-count {cache}: a value >= 1 must be a whole number of blocks")
        cache = int(cache)
    return TurbomindEngineConfig(
        dtype=args.dtype,
        model_format=args.model_format,
        tp=args.tp,
        session_len=args.session_len,
        max_batch_size=args.max_batch_size,
        cache_max_entry_count=cache,
        cache_block_seq_len=args.cache_block_seq_len,
        enable_prefix_caching=args.enable_prefix_caching,
        quant_policy=args.quant_policy,
        rope_scaling_factor=args.rope_scaling_factor,
        max_prefill_token_num=args.max_prefill_token_num,
        device=args.device,
    )
