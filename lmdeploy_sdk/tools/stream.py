"""The streaming machinery every format's parser shares.

A format only says, for the text held so far, what its head is (content, a call, or
"cannot tell yet"); this base class buffers, loops and applies the whitespace rule,
so that any split of the same output gives the same content and calls.
"""
from __future__ import annotations

from typing import NamedTuple

from lmdeploy_sdk.tools.calls import ParsedCall
from lmdeploy_sdk.tools.jsonscan import JsonEnd

__all__ = ["Step", "BufferedParser", "partial_suffix_len", "skip_space"]


class Step(NamedTuple):
    """`consumed` chars of the buffer's head turned out to be `content` and/or `calls`."""

    consumed: int
    content: str = ""
    calls: tuple[ParsedCall, ...] = ()


def partial_suffix_len(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag (it may still become the tag)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


def skip_space(text: str, i: int, extra: str = "") -> int:
    """The index of the first char at or after i that is neither whitespace nor in `extra`."""
    while i < len(text) and (text[i].isspace() or text[i] in extra):
        i += 1
    return i


class BufferedParser:
    """Base of every format's ToolCallParser: subclasses implement `_step`.

    `_step(buf, final)` looks at the unconsumed text and returns a Step for its head,
    or None when the head may still become a call (only when not final). Its answer for
    a given head must not depend on how the text was split.

    Whitespace-only content between the start, calls and the end (e.g. the newline
    between two `<tool_call>` blocks) is dropped when it touches a call; without any
    call it is kept, so a plain answer is never changed.
    """

    def __init__(self) -> None:
        self._buf = ""
        self._pending = ""  # whitespace content that is dropped if a call comes next
        self._segment_has_text = False  # the content since the last call has non-space text
        self._seen_call = False
        self._scan: JsonEnd | None = None
        self._searched = 0  # a step may note how far it has searched the buffer for a tag in vain

    def feed(self, text: str) -> tuple[str, list[ParsedCall]]:
        """A text delta -> (content to show now, calls completed now)."""
        self._buf += text
        return self._run(final=False)

    def flush(self) -> tuple[str, list[ParsedCall]]:
        """End of output: what was held back (an unfinished call stays content)."""
        return self._run(final=True)

    def _step(self, buf: str, final: bool) -> Step | None:
        raise NotImplementedError

    def _json_end(self, buf: str, start: int) -> int | None:
        """End of the JSON value at buf[start] (`{` or `[`), remembered across feeds."""
        if self._scan is None or self._scan.start != start:
            self._scan = JsonEnd(start)
        return self._scan.advance(buf)

    def _run(self, final: bool) -> tuple[str, list[ParsedCall]]:
        content: list[str] = []
        calls: list[ParsedCall] = []
        while self._buf:
            step = self._step(self._buf, final)
            if step is None:
                if not final:
                    break
                step = Step(len(self._buf), self._buf)  # a format that cannot decide at the end: text
            if step.consumed <= 0:  # a format bug must not stall or crash a response: release the text
                step = Step(len(self._buf), self._buf)
            self._buf = self._buf[step.consumed:]
            self._scan, self._searched = None, 0
            if step.content:
                self._content(step.content, content)
            if step.calls:
                self._pending, self._segment_has_text, self._seen_call = "", False, True
                calls.extend(step.calls)
        if final:
            if not self._seen_call:
                content.append(self._pending)
            self._pending = ""
        return "".join(content), calls

    def _content(self, text: str, out: list[str]) -> None:
        if self._segment_has_text:
            out.append(text)
        elif text.isspace():
            self._pending += text
        else:
            out.append(self._pending + text)
            self._pending, self._segment_has_text = "", True
