"""`lmdeploy-sdk convert SRC --dst-path DIR`: a GGUF file or HF directory -> our safetensors model directory."""
from __future__ import annotations

import argparse
import sys

from lmdeploy_sdk.cli.engine_args import note

DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a GGUF file or HF directory into a safetensors model directory",
        description="Convert a .gguf file, a HF model directory or an embedded model name into a HF-style "
        "directory (config.json, tokenizer with chat template, safetensors weights). GGUF weights are "
        "dequantized to float unless --keep-quantized is given.",
    )
    p.add_argument("src", metavar="SRC", help="a .gguf file, a HF model directory, or an embedded model name")
    p.add_argument("model_path", nargs="?", default=None, metavar="[PATH]",
                   help="LMDeploy's form `convert MODEL_NAME PATH`: then SRC is the model name (not needed "
                   "here: the chat template comes with the model) and PATH the model")
    p.add_argument("--dst-path", default="./workspace",
                   help="the directory to create (must not exist or be empty; default ./workspace, as LMDeploy)")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="dtype of the float weights (auto: float32 for GGUF, the checkpoint's own dtype for HF)")
    p.add_argument("--keep-quantized", action="store_true",
                   help="GGUF only: write the decoder projections stored as Q4_0/Q4_1 as 4-bit weights, as they "
                   "are (no dequantization), so the directory runs 4-bit (model_format awq); embeddings, norms, "
                   "the output head and projections of other types (Q8_0, Q6_K, F16, ...) stay float")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmdeploy_sdk.convert import convert, is_gguf
    from lmdeploy_sdk.errors import ModelLoadError
    from lmdeploy_sdk.model_source import EMBEDDED_MODELS

    if args.model_path is not None:
        note("convert", f"model name {args.src!r} is not needed (the chat template comes with the model); "
                        f"converting {args.model_path}")
        args.src = args.model_path
    src = Path(args.src).expanduser()
    embedded = EMBEDDED_MODELS.get(args.src.strip().lower())
    try:
        if not src.exists() and embedded is not None:
            src = embedded.gguf_path()
        if args.keep_quantized and src.exists() and not is_gguf(src):
            print(f"lmdeploy-sdk convert: error: --keep-quantized needs a .gguf file (or an embedded model "
                  f"name), got {args.src}", file=sys.stderr)
            return 2
        out = convert(src, args.dst_path, dtype=args.dtype, keep_quantized=args.keep_quantized)
    except (FileNotFoundError, FileExistsError, ModelLoadError, ValueError) as exc:
        print(f"lmdeploy-sdk convert: error: {exc}", file=sys.stderr)
        return 1
    print(f"converted {args.src} -> {out}" + (" (4-bit Q4 weights kept)" if args.keep_quantized else ""))
    return 0
