"""SessionAffinityRouter's choices, on stand-in replicas (Ray's own probing and retries are Ray's)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from ray.serve.request_router import PendingRequest

from lmdeploy_sdk.server.ray.forward import ForwardedRequest
from lmdeploy_sdk.server.ray.router import SessionAffinityRouter


def replicas(*ids: str) -> list:
    return [SimpleNamespace(replica_id=SimpleNamespace(unique_id=i)) for i in ids]


def choose(candidates: list, request: ForwardedRequest | None) -> list[list[str]]:
    async def main():
        router = object.__new__(SessionAffinityRouter)  # choose_replicas reads no router state
        pending = None if request is None else PendingRequest(args=[request], kwargs={}, metadata=None)
        ranks = await router.choose_replicas(candidates, pending)
        return [[r.replica_id.unique_id for r in rank] for rank in ranks]

    return asyncio.run(main())


def test_a_session_goes_only_to_its_replica():
    for _ in range(20):
        assert choose(replicas("a", "b", "c"), ForwardedRequest("POST", "/x", owner="b")) == [["b"]]


def test_a_gone_owner_sends_the_request_anywhere_to_be_told_session_lost():
    ranks = choose(replicas("a", "c"), ForwardedRequest("POST", "/x", owner="b"))
    assert len(ranks) == 1 and set(ranks[0]) == {"a", "c"}


def test_others_get_two_random_replicas_in_random_order():
    seen_first, seen_pairs = set(), set()
    for _ in range(200):
        (rank,) = choose(replicas("a", "b", "c"), ForwardedRequest("GET", "/v1/models"))
        assert len(rank) == 2 and len(set(rank)) == 2
        seen_first.add(rank[0])
        seen_pairs.add(frozenset(rank))
    assert seen_first == {"a", "b", "c"} and len(seen_pairs) == 3
    (rank,) = choose(replicas("a"), None)
    assert rank == ["a"]


def test_the_fanout_asks_replicas_not_yet_asked_then_any():
    assert choose(replicas("a", "b", "c"), ForwardedRequest("GET", "/metrics", exclude=("a", "b"))) == [["c"]]
    (rank,) = choose(replicas("a", "b"), ForwardedRequest("GET", "/metrics", exclude=("a", "b")))
    assert set(rank) <= {"a", "b"} and rank
