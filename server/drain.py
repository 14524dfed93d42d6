"""Graceful shutdown: stop taking work, give running requests a grace period, then end them cleanly.

Each running request registers a wake-up callback; when the grace period runs
out, every one is woken and ends with a 503 error (an error event for a stream)
instead of being cut off mid-response.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from lmdeploy_sdk.server.errors import APIError


class ServerDraining(Exception):
    """Raised inside a request that is ended because the server is shutting down."""


def draining_error() -> APIError:
    return APIError(503, "the server is shutting down; retry on another replica or later", code="server_shutdown")


class DrainController:
    """Owned by one app; used from its event loop (begin() is safe from any thread via the loop)."""

    def __init__(self) -> None:
        self.draining = False
        self.stopped = False
        self._wakers: set[Callable[[], None]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def check_accepting(self) -> None:
        if self.draining:
            raise draining_error()

    def register(self, wake: Callable[[], None]) -> None:
        self._wakers.add(wake)

    def unregister(self, wake: Callable[[], None]) -> None:
        self._wakers.discard(wake)

    def begin(self, grace_s: float) -> None:
        """Refuse new requests now; end the running ones after grace_s seconds."""
        if self.draining:
            return
        self.draining = True
        self._timer = asyncio.get_running_loop().call_later(grace_s, self.stop_all)

    def stop_all(self) -> None:
        self.stopped = True
        for wake in list(self._wakers):
            wake()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
