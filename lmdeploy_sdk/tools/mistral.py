"""Mistral format: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]`.

`[TOOL_CALLS]` is a control token the detokenizer may strip, so an output that opens
with a JSON array of call objects is taken as calls too.
"""
from __future__ import annotations

from lmdeploy_sdk.tools.base import ToolFormat, call_json
from lmdeploy_sdk.tools.calls import ParsedCall, call_from_object, load_json
from lmdeploy_sdk.tools.grammar import calls_schema, json_rule, lark_literal
from lmdeploy_sdk.tools.stream import BufferedParser, Step, partial_suffix_len, skip_space

__all__ = ["MistralFormat", "MistralParser", "TAG"]

TAG = "[TOOL_CALLS]"


def _calls(text: str) -> tuple[ParsedCall, ...]:
    """The calls of a JSON array of call objects (or of one object); () unless every item is a call."""
    value = load_json(text)
    items = value if isinstance(value, list) else [value]
    calls = [call_from_object(item) for item in items]
    return tuple(c for c in calls if c is not None) if calls and None not in calls else ()


class MistralParser(BufferedParser):
    """Content, with `[TOOL_CALLS]` + JSON array (or object) anywhere, or a bare array at the very start."""

    def __init__(self) -> None:
        super().__init__()
        self._at_start = True

    def _value(self, buf: str, start: int, final: bool) -> Step | None:
        """The JSON value at buf[start] ends the step: calls, or content if it is not calls."""
        end = self._json_end(buf, start)
        if end is None:
            return None if not final else Step(len(buf), buf)
        calls = _calls(buf[start:end])
        return Step(end, "", calls) if calls else Step(end, buf[:end])

    def _step(self, buf: str, final: bool) -> Step | None:
        if self._at_start:
            i = skip_space(buf, 0)
            rest = buf[i:]
            if not final and (not rest or TAG.startswith(rest)):
                return None
            if rest.startswith("[") and not TAG.startswith(rest) and not rest.startswith(TAG):
                step = self._value(buf, i, final)
                if step is not None:
                    self._at_start = False
                return step
            self._at_start = False
        start = buf.find(TAG)
        if start < 0:
            keep = 0 if final else partial_suffix_len(buf, TAG)
            return Step(len(buf) - keep, buf[: len(buf) - keep]) if len(buf) > keep else None
        if start > 0:
            return Step(start, buf[:start])
        j = skip_space(buf, len(TAG))
        if j == len(buf):
            return None if not final else Step(len(buf), buf)
        if buf[j] not in "[{":
            return Step(len(TAG), TAG)
        return self._value(buf, j, final)


class MistralFormat(ToolFormat):
    """`[TOOL_CALLS] ` then one JSON array holding every call of the turn."""

    name = "mistral"

    def parser(self) -> MistralParser:
        return MistralParser()

    def call_grammar(self, tools: list[dict], force: str | None, parallel: bool) -> str:
        # The tag as text: in Mistral's vocabulary it is a control token, elsewhere it does not exist.
        array = {"type": "array", "items": calls_schema(tools, force, "arguments"), "minItems": 1}
        if not parallel:
            array["maxItems"] = 1
        defs = array["items"].pop("$defs", None)
        if defs:
            array["$defs"] = defs
        return f"%llguidance {{}}\nstart: {lark_literal(TAG + ' ')} body\nbody: {json_rule(array)}\n"

    def render_calls(self, calls: list[dict]) -> str:
        return f"{TAG} [" + ", ".join(call_json(c, "arguments") for c in calls) + "]"
