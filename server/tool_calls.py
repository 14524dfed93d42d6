"""Tool calls in generated text -> OpenAI `tool_calls`.

Understands the `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` form that
Qwen2.5/Qwen3, Hermes and InternLM2.5-style templates teach their models. Text
outside the tags stays content; a tag whose body is not a JSON call is left as text.
"""
from __future__ import annotations

import json
import uuid

from lmdeploy_sdk.server.schemas.chat import ToolCall, ToolCallDelta, ToolCallFunction

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def _call(body: str) -> ToolCall | None:
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    function = ToolCallFunction(name=obj["name"], arguments=arguments)
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", function=function)


def split_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """(the text outside well-formed tool-call tags, the calls in order)."""
    parser = ToolCallStream()
    content, deltas = parser.feed(text)
    tail = parser.flush()
    calls = [ToolCall(id=d.id, function=d.function) for d in deltas]
    return content + tail, calls


class ToolCallStream:
    """Incremental version for streamed answers: feed text deltas, get content and finished calls.

    Text that might be the start of a tag is held back until it is clear.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False
        self.calls = 0

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        self._buffer += text
        content, done = [], []
        while True:
            if self._inside:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    break
                body, self._buffer = self._buffer[:end], self._buffer[end + len(CLOSE):]
                self._inside = False
                call = _call(body.strip())
                if call is None:
                    content.append(OPEN + body + CLOSE)
                else:
                    done.append(ToolCallDelta(index=self.calls, id=call.id, function=call.function))
                    self.calls += 1
                continue
            start = self._buffer.find(OPEN)
            if start >= 0:
                content.append(self._buffer[:start])
                self._buffer = self._buffer[start + len(OPEN):]
                self._inside = True
                continue
            keep = _partial_tag_len(self._buffer)
            content.append(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep:]
            break
        return "".join(content), done

    def flush(self) -> str:
        """What is still held back (an unfinished tag stays text)."""
        text = (OPEN if self._inside else "") + self._buffer
        self._buffer, self._inside = "", False
        return text


def _partial_tag_len(text: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of OPEN."""
    for n in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-n:]):
            return n
    return 0
