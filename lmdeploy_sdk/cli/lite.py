"""`lmdeploy-sdk lite auto_awq MODEL --work-dir DIR ...` (LMDeploy's `lmdeploy lite auto_awq`)."""
from __future__ import annotations

import argparse
import sys

DTYPE_CHOICES = ("auto", "float16", "bfloat16", "float32")


def register(sub: argparse._SubParsersAction) -> None:
    lite = sub.add_parser("lite", help="quantize a model offline (auto_awq: 4-bit weights)")
    kinds = lite.add_subparsers(dest="lite_command", metavar="{auto_awq}", parser_class=type(lite))
    lite.set_defaults(func=lambda _args: lite.print_help() or 2)  # `lite` alone: its help, a usage error

    p = kinds.add_parser(
        "auto_awq",
        help="AWQ 4-bit weights, written in AutoAWQ's layout",
        description="Calibrate MODEL layer by layer on calibration text, search activation-aware scales and "
        "clipping ranges, and write 4-bit weights (AutoAWQ GEMM layout) to --work-dir, which pipeline() and "
        "`serve api_server` load. Calibration runs offline: the default set is Moby-Dick (public domain, "
        "shipped with the package).",
    )
    p.add_argument("model", metavar="MODEL", help="HF model directory or embedded model name")
    p.add_argument("--work-dir", default="./work_dir", help="output directory, new or empty (default ./work_dir)")
    p.add_argument("--calib-dataset", default="moby-dick",
                   help="'moby-dick' (shipped, default), 'random', a .txt file, or a .jsonl file with a 'text' field")
    p.add_argument("--calib-samples", type=int, default=128, help="calibration windows (default 128)")
    p.add_argument("--calib-seqlen", type=int, default=2048, help="tokens per window (default 2048)")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward (default 1)")
    p.add_argument("--w-bits", type=int, default=4, help="weight bits (only 4)")
    p.add_argument("--w-sym", action="store_true", help="symmetric int4 (zero point 8)")
    p.add_argument("--w-group-size", type=int, default=128, help="inputs per scale group: 32, 64, 128 or 256")
    p.add_argument("--search-scale", action="store_true",
                   help="grid-search the scale exponent per group (slower) instead of using 0.5")
    p.add_argument("--device", default=None, help="where layers are calibrated (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="calibration dtype (auto: float32 on CPU, the checkpoint's on GPU)")
    p.set_defaults(func=run_auto_awq)


def run_auto_awq(args: argparse.Namespace) -> int:
    from lmdeploy_sdk.errors import ModelLoadError
    from lmdeploy_sdk.lite import auto_awq

    try:
        out = auto_awq(args.model, args.work_dir, calib_dataset=args.calib_dataset, calib_samples=args.calib_samples,
                       calib_seqlen=args.calib_seqlen, batch_size=args.batch_size, w_bits=args.w_bits,
                       w_sym=args.w_sym, w_group_size=args.w_group_size, search_scale=args.search_scale,
                       device=args.device, dtype=args.dtype)
    except (ValueError, FileNotFoundError, FileExistsError, ModelLoadError) as exc:
        message = " ".join(str(exc).split())  # one line
        print(f"lmdeploy-sdk lite auto_awq: error: {message}", file=sys.stderr)
        return 2
    print(f"quantized {args.model} -> {out} (AWQ, 4-bit, group {args.w_group_size}); "
          f"run it with: lmdeploy-sdk chat {args.work_dir}")
    return 0
