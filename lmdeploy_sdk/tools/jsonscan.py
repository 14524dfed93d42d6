"""Where a streamed JSON object or array ends, without rescanning text already seen.

Formats without a closing tag (a bare JSON call, a `[TOOL_CALLS]` array) end where
their JSON value ends; brackets inside strings must not count.
"""
from __future__ import annotations

import re

__all__ = ["JsonEnd"]

_OUTSIDE = re.compile(r'["{}\[\]]')
_INSIDE = re.compile(r'["\\]')


class JsonEnd:
    """Tracks bracket depth of the JSON value starting at `start` (which must be `{` or `[`).

    Only balances brackets and strings; the caller validates the slice with json.loads.
    """

    def __init__(self, start: int) -> None:
        self.start = start
        self._pos = start
        self._depth = 0
        self._in_string = False

    def advance(self, text: str) -> int | None:
        """The index just past the value in `text` (which only grew since the last call), or None."""
        pos, n = self._pos, len(text)
        while pos < n:
            if self._in_string:
                m = _INSIDE.search(text, pos)
                if m is None:
                    pos = n
                    break
                if m.group() == "\\":
                    if m.end() >= n:  # the escaped char has not arrived yet
                        pos = m.start()
                        break
                    pos = m.end() + 1
                    continue
                self._in_string = False
                pos = m.end()
                continue
            m = _OUTSIDE.search(text, pos)
            if m is None:
                pos = n
                break
            pos = m.end()
            ch = m.group()
            if ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth <= 0:
                    self._pos = pos
                    return pos
        self._pos = pos
        return None
