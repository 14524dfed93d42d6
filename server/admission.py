"""A bound on the sequences the server has in flight: past it, new requests get 429 + Retry-After.

Requests inside the bound wait in the engine's own queue; the bound keeps that
queue (and the latency of everything in it) from growing without limit.
"""
from __future__ import annotations

from lmdeploy_sdk.server.errors import APIError


class AdmissionLimiter:
    """Counts sequences (a request with n choices holds n). Used from the event loop only."""

    def __init__(self, capacity: int, retry_after_s: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"max_concurrent_requests={capacity} must be >= 1")
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    def acquire(self, sequences: int) -> None:
        """Take `sequences` slots or raise: 400 if the request can never fit, 429 if not now."""
        if sequences > self.capacity:
            raise APIError(
                400,
                f"this request asks for {sequences} sequences, more than the server runs at once "
                f"({self.capacity}); lower n or the number of prompts",
                param="n",
                code="too_many_sequences",
            )
        if self.in_flight + sequences > self.capacity:
            raise APIError(
                429,
                f"the server is at capacity ({self.in_flight} of {self.capacity} sequences in flight); retry later",
                code="server_busy",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.in_flight += sequences

    def release(self, sequences: int) -> None:
        assert 0 <= sequences <= self.in_flight, (sequences, self.in_flight)
        self.in_flight -= sequences
