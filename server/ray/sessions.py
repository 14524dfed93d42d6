"""Which replica holds which session, as the ingress learned it from the replicas' answers."""
from __future__ import annotations

from collections import OrderedDict


class SessionTable:
    """session id -> replica id, least recently used dropped first past `capacity`.

    Forgetting a session that still lives on a replica costs only affinity: its next turn
    goes to any replica as a new session. The capacity is meant to be at least the sum of
    the replicas' --max-sessions, so that replicas, not the table, decide what is kept.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity} must be >= 1")
        self._capacity = capacity
        self._owners: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def owner(self, session_id: int) -> str | None:
        replica = self._owners.get(session_id)
        if replica is not None:
            self._owners.move_to_end(session_id)
        return replica

    def record(self, session_id: int, replica: str) -> None:
        self._owners[session_id] = replica
        self._owners.move_to_end(session_id)
        while len(self._owners) > self._capacity:
            self._owners.popitem(last=False)

    def forget(self, session_id: int, replica: str | None = None) -> None:
        """Drop the entry (only if it still names `replica`, when given)."""
        if replica is None or self._owners.get(session_id) == replica:
            self._owners.pop(session_id, None)
