"""Llama-3.1/3.2 JSON format: optional `<|python_tag|>`, then `{"name": ..., "parameters": {...}}`.

The tag is a special token the detokenizer may strip, so the JSON object alone is
enough: an output that opens with a call object (after whitespace and the tag) is a
call; an output that opens with anything else is plain content.
"""
from __future__ import annotations

from lmdeploy_sdk.tools.base import ToolFormat, call_json
from lmdeploy_sdk.tools.calls import call_from_json
from lmdeploy_sdk.tools.grammar import calls_schema, json_rule, repeated_calls_grammar
from lmdeploy_sdk.tools.stream import BufferedParser, Step, skip_space

__all__ = ["Llama3JsonFormat", "Llama3JsonParser", "PYTHON_TAG"]

PYTHON_TAG = "<|python_tag|>"
SEPARATOR = "; "


class Llama3JsonParser(BufferedParser):
    """Bare call objects at the start, separated by `;` and/or whitespace; the rest is content.

    A call is committed when its object closes; text after the last call that is not a
    call is content from there on (a stream cannot take a call back).
    """

    def __init__(self) -> None:
        super().__init__()
        self._calls_possible = True

    def _skip(self, buf: str) -> int:
        i = 0
        while True:
            j = skip_space(buf, i, ";")
            if buf.startswith(PYTHON_TAG, j):
                j += len(PYTHON_TAG)
            if j == i:
                return i
            i = j

    def _step(self, buf: str, final: bool) -> Step | None:
        if not self._calls_possible:
            return Step(len(buf), buf)
        i = self._skip(buf)
        rest = buf[i:]
        if not final and (not rest or PYTHON_TAG.startswith(rest)):
            return None
        if not rest or rest[0] != "{":
            self._calls_possible = False
            return Step(len(buf), buf)
        end = self._json_end(buf, i)
        if end is None:
            if not final:
                return None
            self._calls_possible = False
            return Step(len(buf), buf)
        call = call_from_json(buf[i:end])
        if call is None:
            self._calls_possible = False
            return Step(end, buf[:end])
        return Step(end, "", (call,))


class Llama3JsonFormat(ToolFormat):
    """JSON call objects; several are joined by `; ` (as vLLM's llama3_json parser expects)."""

    name = "llama3_json"

    def parser(self) -> Llama3JsonParser:
        return Llama3JsonParser()

    def call_grammar(self, tools: list[dict], force: str | None, parallel: bool) -> str:
        # No <|python_tag|>: it is a special token in Llama's vocabulary only, and the JSON alone parses.
        body = json_rule(calls_schema(tools, force, "parameters"))
        return repeated_calls_grammar(body, "", "", SEPARATOR, parallel)

    def render_calls(self, calls: list[dict]) -> str:
        return SEPARATOR.join(call_json(c, "parameters") for c in calls)
