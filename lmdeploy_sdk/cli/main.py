"""Entry point: builds the parser from the subcommand modules and dispatches.

Each subcommand module exposes `register(subparsers)`, which adds its parser and
sets `func` (Namespace -> exit code). Modules import their heavy dependencies
inside `func`, so `--version` and `--help` stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from lmdeploy_sdk.errors import ModelLoadError
from lmdeploy_sdk.version import __version__

SUBCOMMAND_MODULES = (
    "lmdeploy_sdk.cli.check_env",
    "lmdeploy_sdk.cli.chat",
    "lmdeploy_sdk.cli.convert",
    "lmdeploy_sdk.cli.lite",
    "lmdeploy_sdk.cli.serve",
    "lmdeploy_sdk.cli.bench",
)


class _Parser(argparse.ArgumentParser):
    """Accepts both --flag-name and --flag_name for every long option (LMDeploy users type either)."""

    def _parse_optional(self, arg_string):
        if arg_string.startswith("--") and "_" in arg_string.split("=", 1)[0]:
            head, sep, tail = arg_string.partition("=")
            arg_string = head.replace("_", "-") + sep + tail
        return super()._parse_optional(arg_string)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lmdeploy-sdk", description="Run and serve LLMs with lmdeploy-sdk.")
    parser.add_argument("--version", action="version", version=f"lmdeploy-sdk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# What a user's input can raise (a bad option value, a model we cannot load, a feature not
# built yet): one line and exit code 2, as argparse does for a bad flag. Anything else is a
# bug and keeps its traceback.
USER_ERRORS = (ValueError, NotImplementedError, ModelLoadError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"lmdeploy-sdk {args.command}: error: {e}", file=sys.stderr)
        return 2
