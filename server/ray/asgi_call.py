"""Drive an ASGI app in-process: run its lifespan, and answer one request as the stream of
ASGI messages it sends.

Why not httpx.ASGITransport: it buffers the whole response, and a replica must stream
(SSE, NDJSON) and pass a client's disconnect on to the app so the generation is aborted.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Awaitable, Callable

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

# After the consumer stops reading, how long the app may take to notice the disconnect.
_DISCONNECT_GRACE_S = 5.0


class LifespanFailed(RuntimeError):
    """The app's startup failed (e.g. the model did not load); the message says why."""


class InProcessApp:
    """One ASGI app: `start()` and `stop()` run its lifespan; `request()` answers a request."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._lifespan_in: asyncio.Queue[dict] = asyncio.Queue()
        self._lifespan_out: asyncio.Queue[dict] = asyncio.Queue()
        self._lifespan: asyncio.Task | None = None

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self._lifespan = asyncio.ensure_future(self._app(scope, self._lifespan_in.get, self._lifespan_out.put))
        await self._lifespan_in.put({"type": "lifespan.startup"})
        reply = await self._next_lifespan_message()
        if reply["type"] != "lifespan.startup.complete":
            with contextlib.suppress(Exception):  # the app re-raises what it reported
                await self._lifespan
            raise LifespanFailed(reply.get("message") or "the app failed to start")

    async def stop(self) -> None:
        if self._lifespan is None or self._lifespan.done():
            return
        await self._lifespan_in.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(Exception):
            await self._next_lifespan_message()
        await asyncio.wait([self._lifespan], timeout=_DISCONNECT_GRACE_S)

    async def _next_lifespan_message(self) -> dict:
        getter = asyncio.ensure_future(self._lifespan_out.get())
        assert self._lifespan is not None
        done, _ = await asyncio.wait([getter, self._lifespan], return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        error = self._lifespan.exception()
        raise LifespanFailed(str(error) if error else "the app ended its lifespan early")

    async def request(self, scope: dict[str, Any], body: bytes) -> AsyncIterator[dict]:
        """The app's messages for one request, up to the last body message. Closing the
        iterator early tells the app the client went away."""
        sent: asyncio.Queue[dict | None] = asyncio.Queue()
        gone = asyncio.Event()
        body_given = False

        async def receive() -> dict:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def run() -> None:
            try:
                await self._app(scope, receive, sent.put)
            finally:
                await sent.put(None)

        task = asyncio.ensure_future(run())
        try:
            while True:
                message = await sent.get()
                if message is None:
                    break
                yield message
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    break
        finally:
            gone.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), _DISCONNECT_GRACE_S)
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()
