"""Hermes format: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`.

Used by Qwen2.5/Qwen3 and Hermes models, and by our fallback prompt for templates that
do not render tools.
"""
from __future__ import annotations

from lmdeploy_sdk.tools.base import ToolFormat, call_json
from lmdeploy_sdk.tools.grammar import calls_schema, json_rule, repeated_calls_grammar
from lmdeploy_sdk.tools.tagged import TaggedParser

__all__ = ["HermesFormat", "OPEN", "CLOSE"]

OPEN, CLOSE = "<tool_call>", "</tool_call>"


class HermesFormat(ToolFormat):
    """`<tool_call>` blocks, one per call, separated by newlines."""

    name = "hermes"

    def parser(self) -> TaggedParser:
        return TaggedParser(OPEN, CLOSE)

    def call_grammar(self, tools: list[dict], force: str | None, parallel: bool) -> str:
        body = json_rule(calls_schema(tools, force, "arguments"))
        return repeated_calls_grammar(body, OPEN + "\n", "\n" + CLOSE, "\n", parallel)

    def render_calls(self, calls: list[dict]) -> str:
        return "\n".join(f"{OPEN}\n{call_json(c, 'arguments')}\n{CLOSE}" for c in calls)
