"""Stop strings matched on streamed text, across token boundaries.

Generation stops at the first point of the text where some stop string is
complete. Text is emitted only once it can no longer be part of a stop string,
so nothing is ever emitted and then taken back.
"""
from __future__ import annotations


class StopStringMatcher:
    """Filters streamed text: holds back possible stop-string beginnings, cuts at a match.

    Only the held-back tail (shorter than the longest stop string) plus the new
    text is searched: any match that ends in the new text starts in that tail,
    since the tail is the longest suffix that is a beginning of a stop string.
    When several stop strings end at the same point, the longest one is cut.
    """

    def __init__(self, stop_words: list[str], include_stop_str: bool = False) -> None:
        for w in stop_words:
            if not isinstance(w, str) or not w:
                raise ValueError(f"stop word {w!r} must be a non-empty str")
        # Longest first, so the first match found at an end position is the longest there.
        self._stop_words = sorted(set(stop_words), key=len, reverse=True)
        self._include_stop_str = include_stop_str
        self._pending = ""  # held-back text that may begin a stop string
        self._emitted: list[str] = []
        self.stopped = False

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return "".join(self._emitted)

    def update(self, new_text: str) -> tuple[str, bool]:
        """Feed newly decoded text; return (text safe to emit now, whether a stop string was hit)."""
        if self.stopped:
            return "", True
        if not self._stop_words:
            return self._emit(new_text), False
        pending = self._pending + new_text
        match = self._first_match(pending)
        if match is not None:
            start, end = match
            self.stopped = True
            self._pending = ""
            return self._emit(pending[: end if self._include_stop_str else start]), True
        keep = self._partial_match_len(pending)
        self._pending = pending[len(pending) - keep :]
        return self._emit(pending[: len(pending) - keep]), False

    def flush(self) -> str:
        """At the normal end of generation: the held-back text (it turned out not to be a stop string)."""
        if self.stopped:
            return ""
        tail, self._pending = self._pending, ""
        return self._emit(tail)

    def _emit(self, text: str) -> str:
        if text:
            self._emitted.append(text)
        return text

    def _first_match(self, text: str) -> tuple[int, int] | None:
        """(start, end) of the match that ends first in `text` (longest among ties), or None."""
        best: tuple[int, int] | None = None
        for w in self._stop_words:
            start = text.find(w)
            if start >= 0 and (best is None or start + len(w) < best[1]):
                best = (start, start + len(w))
        return best

    def _partial_match_len(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for w in self._stop_words:
            for k in range(min(len(w) - 1, len(text)), best, -1):
                if text.endswith(w[:k]):
                    best = k
                    break
        return best
