"""The session store alone: the cap, the idle TTL, LRU eviction, in-flight protection, ownership."""
from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lmdeploy_sdk.server.sessions import AUTO_ID_LOW, MAX_SESSION_ID, SessionBusy, SessionNotFound, SessionStore

CAP = 4
TTL = 10.0
IDS = st.integers(0, 9)
OWNERS = st.sampled_from([None, "key-a", "key-b"])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class StoreMachine(RuleBasedStateMachine):
    """A model of what the store must hold: owner, in-flight count and last use per session."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = SessionStore(CAP, TTL, clock=self.clock)
        self.model: dict[int, list] = {}  # sid -> [owner, in_flight, last_used]

    def _check_evicted(self, evicted: list[int]) -> None:
        for sid in evicted:
            owner, in_flight, last_used = self.model.pop(sid)
            assert in_flight == 0, f"evicted session {sid} had a request in flight"
            # least recently used first: every idle session kept was used no earlier
            kept_idle = [m[2] for m in self.model.values() if m[1] == 0]
            assert all(t >= last_used for t in kept_idle)

    @rule(sid=IDS, owner=OWNERS)
    def acquire(self, sid, owner):
        known = self.model.get(sid)
        if known is not None and known[0] != owner:
            with pytest.raises(SessionNotFound):
                self.store.acquire(sid, owner)
            return
        if known is not None and known[1] > 0:
            with pytest.raises(SessionBusy):
                self.store.acquire(sid, owner)
            return
        if known is None:
            self.model[sid] = [owner, 0, self.clock.now]
        self.model[sid][1] += 1
        self.model[sid][2] = self.clock.now
        self._check_evicted(self.store.acquire(sid, owner))

    @precondition(lambda self: any(m[1] for m in self.model.values()))
    @rule(data=st.data())
    def release(self, data):
        sid = data.draw(st.sampled_from(sorted(s for s, m in self.model.items() if m[1])))
        self.model[sid][1] -= 1
        self.model[sid][2] = self.clock.now
        self._check_evicted(self.store.release(sid))

    @rule(sid=IDS)
    def remove(self, sid):
        assert (self.store.remove(sid) is not None) == (sid in self.model)
        self.model.pop(sid, None)

    @rule(seconds=st.floats(0.0, 2 * TTL))
    def wait(self, seconds):
        self.clock.now += seconds

    @rule()
    def expire(self):
        gone = set(self.store.expire())
        for sid in gone:
            owner, in_flight, last_used = self.model.pop(sid)
            assert in_flight == 0 and last_used <= self.clock.now - TTL
        for sid, (_, in_flight, last_used) in self.model.items():
            assert in_flight or last_used > self.clock.now - TTL, f"session {sid} should have expired"

    @invariant()
    def matches_model(self):
        assert len(self.store) == len(self.model)
        assert all(sid in self.store for sid in self.model)

    @invariant()
    def within_cap_unless_all_busy(self):
        if len(self.model) > CAP:
            assert all(m[1] for m in self.model.values())

    @invariant()
    def owners_kept_apart(self):
        for sid, (owner, _, _) in self.model.items():
            assert self.store.get(sid, owner) is not None
            for other in (None, "key-a", "key-b"):
                if other != owner:
                    with pytest.raises(SessionNotFound):
                        self.store.get(sid, other)


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_flat_after_the_cap():
    store = SessionStore(100, 3600)
    for sid in range(10_000):
        store.acquire(sid, None)
        store.release(sid)
        assert len(store) <= 100
    assert sorted(sid for sid in range(10_000) if sid in store) == list(range(9_900, 10_000))


def test_auto_ids_are_random_and_fresh():
    store = SessionStore(10, 3600)
    ids = [store.new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(AUTO_ID_LOW <= i <= MAX_SESSION_ID for i in ids)
    gaps = {b - a for a, b in zip(ids, ids[1:])}
    assert len(gaps) > 990  # not a counter


@pytest.mark.parametrize("cap, ttl", [(0, 1.0), (1, 0.0), (1, -5.0)])
def test_bad_limits_are_named(cap, ttl):
    with pytest.raises(ValueError, match="max_sessions|idle_ttl_s"):
        SessionStore(cap, ttl)
