"""The server's sessions: who owns each one, when it was last used, and which to end when there are too many.

A session keeps token history and KV cache in the engine (and, for `/v1/chat/interactive`,
its conversation here) between requests. Without a bound every distinct `session_id` a
client sends would stay forever, so the store holds at most `max_sessions` and ends idle
ones least recently used first, and any left idle longer than `idle_ttl_s`. A session
with a request in flight is never ended by the store.

Ownership: with API keys, a session belongs to the key that opened it, and to any other
key it does not exist. Without keys every owner is None and sessions are shared.

Pure bookkeeping (no engine, no asyncio): the caller ends in the engine what the store
returns as evicted or expired.
"""
from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

# Ids the server picks for `session_id: -1`: random, below 2**53 so JavaScript clients read
# them exactly, and above 2**50, away from the small ids people pick by hand.
AUTO_ID_LOW = 1 << 50
MAX_SESSION_ID = (1 << 53) - 1


class SessionNotFound(Exception):
    """No such session for this owner (another key's session looks the same as none)."""

    def __init__(self, session_id: int) -> None:
        super().__init__(f"session {session_id} does not exist")
        self.session_id = session_id


class SessionBusy(Exception):
    def __init__(self, session_id: int) -> None:
        super().__init__(f"session {session_id} already has a running request")
        self.session_id = session_id


@dataclass
class SessionEntry:
    """owner: who may use it (None: anyone); conversation: the interactive route's turns so far."""

    owner: str | None
    last_used: float
    in_flight: int = 0
    conversation: Any = None


class SessionStore:
    def __init__(self, max_sessions: int, idle_ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions={max_sessions} must be >= 1")
        if idle_ttl_s <= 0:
            raise ValueError(f"idle_ttl_s={idle_ttl_s} must be > 0")
        self.max_sessions = max_sessions
        self.idle_ttl_s = idle_ttl_s
        self._clock = clock
        self._entries: OrderedDict[int, SessionEntry] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, session_id: int) -> bool:
        return session_id in self._entries

    def get(self, session_id: int, owner: str | None) -> SessionEntry | None:
        """The owner's session, or None if there is none; SessionNotFound if it is another owner's."""
        entry = self._entries.get(session_id)
        if entry is not None and entry.owner != owner:
            raise SessionNotFound(session_id)
        return entry

    def acquire(self, session_id: int, owner: str | None) -> list[int]:
        """Mark a request in flight on the session (opening it if new); returns the sessions
        evicted to stay within max_sessions, for the caller to end in the engine."""
        entry = self.get(session_id, owner)
        if entry is not None and entry.in_flight:
            raise SessionBusy(session_id)
        now = self._clock()
        if entry is None:
            entry = self._entries[session_id] = SessionEntry(owner, now)
        else:
            entry.last_used = now
            self._entries.move_to_end(session_id)
        entry.in_flight += 1
        return self._evict_over_cap()

    def release(self, session_id: int) -> list[int]:
        """The request on the session ended; returns the sessions evicted now that one more is idle."""
        entry = self._entries.get(session_id)
        if entry is None:  # ended while the request ran
            return []
        assert entry.in_flight > 0, f"session {session_id} released more often than acquired"
        entry.in_flight -= 1
        entry.last_used = self._clock()
        self._entries.move_to_end(session_id)
        return self._evict_over_cap()

    def remove(self, session_id: int) -> SessionEntry | None:
        return self._entries.pop(session_id, None)

    def expire(self) -> list[int]:
        """Remove the sessions idle for longer than idle_ttl_s; returns their ids."""
        deadline = self._clock() - self.idle_ttl_s
        gone = []
        for sid, entry in self._entries.items():  # oldest first: stop at the first recent one
            if entry.last_used > deadline:
                break
            if not entry.in_flight:
                gone.append(sid)
        for sid in gone:
            del self._entries[sid]
        return gone

    def new_id(self) -> int:
        """A random id no session has (unguessable, so other clients cannot use it)."""
        while True:
            sid = AUTO_ID_LOW + secrets.randbelow(MAX_SESSION_ID - AUTO_ID_LOW + 1)
            if sid not in self._entries:
                return sid

    def _evict_over_cap(self) -> list[int]:
        excess = len(self._entries) - self.max_sessions
        if excess <= 0:
            return []
        victims = []
        for sid, entry in self._entries.items():
            if not entry.in_flight:
                victims.append(sid)
                if len(victims) == excess:
                    break
        for sid in victims:
            del self._entries[sid]
        return victims
