"""What a tool-call format is: a parser, a grammar and a renderer for one model family."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from lmdeploy_sdk.tools.calls import ParsedCall, ToolCallParser, load_json

__all__ = ["ToolFormat", "split_calls", "call_json"]


class ToolFormat(ABC):
    """One format family: how its models write calls, and how to force and replay them."""

    name: str

    @abstractmethod
    def parser(self) -> ToolCallParser:
        """A fresh parser for one generated choice."""

    @abstractmethod
    def call_grammar(self, tools: list[dict], force: str | None, parallel: bool) -> str:
        """An llguidance Lark grammar whose outputs are exactly one call (or, parallel, one or more)
        to the tools (or only to `force`), with arguments valid against the tool's parameters."""

    @abstractmethod
    def render_calls(self, calls: list[dict]) -> str:
        """OpenAI `tool_calls` of an assistant turn as the text the model would have written."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def split_calls(fmt: ToolFormat, text: str) -> tuple[str, list[ParsedCall]]:
    """(content, calls) of a whole output: the same as streaming it through fmt.parser()."""
    parser = fmt.parser()
    content, calls = parser.feed(text)
    tail, more = parser.flush()
    return content + tail, calls + more


def call_json(call: dict, args_key: str) -> str:
    """One OpenAI tool call as `{"name": ..., <args_key>: {...}}` in json.dumps's default style.

    Arguments arrive as JSON text; they are embedded as the object they encode (as a
    string only when they are not valid JSON, so history is never lost).
    """
    fn: Any = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ValueError(f"a tool call must be {{'function': {{'name': str, 'arguments': str}}}}, got {call!r}")
    args: Any = fn.get("arguments")
    if args is None or (isinstance(args, str) and not args.strip()):
        args = {}
    elif isinstance(args, str):
        decoded = load_json(args)
        args = decoded if isinstance(decoded, (dict, list)) else args
    return json.dumps({"name": fn["name"], args_key: args}, ensure_ascii=False)
