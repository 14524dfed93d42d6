"""`lmdeploy-sdk convert SRC --dst-path DIR`: a GGUF file or HF directory -> our safetensors model directory."""
from __future__ import annotations

import argparse
import sys

DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a GGUF file or HF directory into a safetensors model directory",
        description="Convert a .gguf file, a HF model directory or an embedded model name into a HF-style "
        "directory (config.json, tokenizer with chat template, safetensors weights).",
    )
    p.add_argument("src", metavar="SRC", help="a .gguf file, a HF model directory, or an embedded model name")
    p.add_argument("--dst-path", required=True, help="the directory to create (must not exist or be empty)")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="weight dtype (auto: float32 for GGUF, the checkpoint's own dtype for HF)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmdeploy_sdk.convert import convert
    from lmdeploy_sdk.errors import ModelLoadError
    from lmdeploy_sdk.model_source import EMBEDDED_MODELS

    try:
        src = Path(args.src).expanduser()
        embedded = EMBEDDED_MODELS.get(args.src.strip().lower())
        if not src.exists() and embedded is not None:
            src = embedded.gguf_path()
        out = convert(src, args.dst_path, dtype=args.dtype)
    except (FileNotFoundError, FileExistsError, ModelLoadError, ValueError) as exc:
        print(f"lmdeploy-sdk convert: error: {exc}", file=sys.stderr)
        return 1
    print(f"converted {args.src} -> {out}")
    return 0
