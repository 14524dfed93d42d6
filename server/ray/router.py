"""SessionAffinityRouter: Ray Serve's hook for where a request goes.

Ray calls choose_replicas with the live replicas; we return ranks of candidates and Ray
probes their queues and sends the request to the least busy one that has room, retrying
with backoff while none has. A request whose session lives on a replica gets only that
replica (it waits for room there rather than go elsewhere); one whose replica is gone goes
anywhere, and that replica answers 410 session_lost (replica.py); others get two random
replicas, "power of two choices".
"""
from __future__ import annotations

import random

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from lmdeploy_sdk.server.ray.forward import ForwardedRequest


def _forwarded(pending_request: PendingRequest | None) -> ForwardedRequest | None:
    if pending_request is None:
        return None
    for arg in pending_request.args:
        if isinstance(arg, ForwardedRequest):
            return arg
    return None


class SessionAffinityRouter(RequestRouter):
    """Routes EngineReplica.handle calls by ForwardedRequest.owner / .exclude."""

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        request = _forwarded(pending_request)
        candidates = candidate_replicas
        if request is not None and request.owner is not None:
            owner = [r for r in candidate_replicas if r.replica_id.unique_id == request.owner]
            if owner:
                return [owner]
        elif request is not None and request.exclude:
            fresh = [r for r in candidate_replicas if r.replica_id.unique_id not in request.exclude]
            candidates = fresh or candidate_replicas
        # Shuffled: among equally idle replicas Ray takes the first, so order must not favour one.
        return [random.sample(candidates, min(2, len(candidates)))]
