"""Formats whose calls sit between an open and a close tag (hermes, internlm2's tagged form)."""
from __future__ import annotations

from lmdeploy_sdk.tools.calls import call_from_json
from lmdeploy_sdk.tools.stream import BufferedParser, Step, partial_suffix_len

__all__ = ["TaggedParser"]


class TaggedParser(BufferedParser):
    """Calls are JSON objects between an open and a close tag; all other text is content.

    A tag whose body is not a call stays text; an open tag followed by another open tag
    before any close is text up to the second; at the end an unclosed tag whose body is
    a complete call still counts (generation may stop before the close tag).
    """

    def __init__(self, open_tag: str, close_tag: str) -> None:
        super().__init__()
        self._open, self._close = open_tag, close_tag

    def _step(self, buf: str, final: bool) -> Step | None:
        return self._tagged(buf, final)

    def _tagged(self, buf: str, final: bool) -> Step | None:
        start = buf.find(self._open)
        if start < 0:
            keep = 0 if final else partial_suffix_len(buf, self._open)
            return Step(len(buf) - keep, buf[: len(buf) - keep]) if len(buf) > keep else None
        if start > 0:
            return Step(start, buf[:start])
        body = len(self._open)
        # Long bodies arrive in many deltas: search only the new text (and a tag's width before it).
        since = max(body, self._searched - max(len(self._open), len(self._close)))
        end = buf.find(self._close, since)
        again = buf.find(self._open, since)
        if again >= 0 and (end < 0 or again < end):
            return Step(again, buf[:again])
        if end < 0:
            if not final:
                self._searched = len(buf)
                return None
            call = call_from_json(buf[body:])
            return Step(len(buf), "", (call,)) if call else Step(len(buf), buf)
        stop = end + len(self._close)
        call = call_from_json(buf[body:end])
        return Step(stop, "", (call,)) if call else Step(stop, buf[:stop])
