"""InternLM2 format: `<|action_start|><|plugin|>\\n{"name": ..., "parameters": {...}}<|action_end|>`.

The tags are special tokens the detokenizer may strip; a call object that opens the
output (or directly follows a call) counts as a call without them, which is also what
the grammar produces.
"""
from __future__ import annotations

from lmdeploy_sdk.tools.base import ToolFormat, call_json
from lmdeploy_sdk.tools.calls import call_from_json
from lmdeploy_sdk.tools.grammar import calls_schema, json_rule, repeated_calls_grammar
from lmdeploy_sdk.tools.stream import Step, skip_space
from lmdeploy_sdk.tools.tagged import TaggedParser

__all__ = ["InternLM2Format", "InternLM2Parser", "OPEN", "CLOSE"]

OPEN, CLOSE = "<|action_start|><|plugin|>", "<|action_end|>"


class InternLM2Parser(TaggedParser):
    """Tagged plugin calls anywhere, plus bare call objects at the start or right after a call."""

    def __init__(self) -> None:
        super().__init__(OPEN, CLOSE)
        self._bare_possible = True

    def _step(self, buf: str, final: bool) -> Step | None:
        if self._bare_possible:
            i = skip_space(buf, 0)
            if i == len(buf) and not final:
                return None
            if i < len(buf) and buf[i] == "{":
                end = self._json_end(buf, i)
                if end is None:
                    return None if not final else Step(len(buf), buf)
                call = call_from_json(buf[i:end])
                if call is not None:
                    return Step(end, "", (call,))
                self._bare_possible = False
                return Step(end, buf[:end])
            self._bare_possible = False
        step = self._tagged(buf, final)
        if step is not None and step.calls:
            self._bare_possible = True
        return step


class InternLM2Format(ToolFormat):
    """Plugin actions; the grammar emits the JSON objects only, newline-separated."""

    name = "internlm2"

    def parser(self) -> InternLM2Parser:
        return InternLM2Parser()

    def call_grammar(self, tools: list[dict], force: str | None, parallel: bool) -> str:
        # No tags: they are special tokens of InternLM2's vocabulary only, and the bare JSON parses.
        body = json_rule(calls_schema(tools, force, "parameters"))
        return repeated_calls_grammar(body, "", "", "\n", parallel)

    def render_calls(self, calls: list[dict]) -> str:
        return "".join(f"{OPEN}\n{call_json(c, 'parameters')}{CLOSE}" for c in calls)
