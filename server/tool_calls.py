"""Parsed tool calls (lmdeploy_sdk.tools) -> OpenAI `tool_calls` and their streamed deltas.

A call that repeats an earlier call of the same answer exactly (same function, same arguments)
is dropped: small models often write the same call twice when parallel calls are allowed, and
running it twice would give the caller nothing new (docs/structured_output.md).
"""
from __future__ import annotations

from lmdeploy_sdk.server.schemas.chat import ToolCall, ToolCallDelta, ToolCallFunction
from lmdeploy_sdk.tools import ParsedCall, ToolFormat, split_calls


def _tool_call(call: ParsedCall) -> ToolCall:
    return ToolCall(id=call.id, function=ToolCallFunction(name=call.name, arguments=call.arguments))


def _distinct(calls: list[ParsedCall], seen: set[tuple[str, str]]) -> list[ParsedCall]:
    out = []
    for call in calls:
        key = (call.name, call.arguments)
        if key not in seen:
            seen.add(key)
            out.append(call)
    return out


def split_tool_calls(fmt: ToolFormat, text: str) -> tuple[str, list[ToolCall]]:
    """(the text outside the calls, the distinct calls in order) of a whole answer."""
    content, calls = split_calls(fmt, text)
    return content, [_tool_call(c) for c in _distinct(calls, set())]


class ToolCallStream:
    """One streamed choice: text deltas in, content and finished calls (numbered in order) out."""

    def __init__(self, fmt: ToolFormat) -> None:
        self._parser = fmt.parser()
        self._seen: set[tuple[str, str]] = set()
        self.calls = 0

    def _deltas(self, calls: list[ParsedCall]) -> list[ToolCallDelta]:
        out = []
        for call in _distinct(calls, self._seen):
            function = ToolCallFunction(name=call.name, arguments=call.arguments)
            out.append(ToolCallDelta(index=self.calls, id=call.id, function=function))
            self.calls += 1
        return out

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        content, calls = self._parser.feed(text)
        return content, self._deltas(calls)

    def flush(self) -> tuple[str, list[ToolCallDelta]]:
        """The end of the answer: what was held back (an unfinished call stays text)."""
        content, calls = self._parser.flush()
        return content, self._deltas(calls)
