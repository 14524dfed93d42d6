"""Run an app under uvicorn with a graceful SIGTERM: drain first, then stop.

On SIGTERM/SIGINT uvicorn stops accepting connections and waits for running
ones; we also tell the app to refuse new requests and, after the grace period,
to end the running ones with a clean error so the wait is bounded.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn
from litestar import Litestar

from lmdeploy_sdk.server.context import ServerContext

log = logging.getLogger("lmdeploy_sdk.server")

# Past the grace period, how long uvicorn still waits for connections before cancelling them.
_BACKSTOP_S = 5.0


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose exit signal first puts the app into drain mode."""

    def __init__(self, config: uvicorn.Config, ctx: ServerContext) -> None:
        super().__init__(config)
        self._ctx = ctx
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def begin_drain(self) -> None:
        """Refuse new requests; end running ones after the grace period (thread-safe)."""
        if self._loop is not None:
            grace = self._ctx.settings.shutdown_grace_s
            self._loop.call_soon_threadsafe(self._ctx.drain.begin, grace)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            log.info("signal %d: draining (grace %.0f s), then shutting down", sig,
                     self._ctx.settings.shutdown_grace_s)
            self.begin_drain()
        super().handle_exit(sig, frame)


def build_server(app: Litestar, host: str = "127.0.0.1", port: int = 23333, log_level: str = "info") -> uvicorn.Server:
    """A DrainingServer for an app from create_app; a plain uvicorn.Server for other apps (the page proxy)."""
    ctx: ServerContext | None = app.state.get("ctx")
    grace = ctx.settings.shutdown_grace_s if ctx is not None else 0.0
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=ctx is None,  # create_app's apps log each request themselves (access_log.py)
        timeout_graceful_shutdown=grace + _BACKSTOP_S,
        lifespan="on",
    )
    return DrainingServer(config, ctx) if ctx is not None else uvicorn.Server(config)


def run_server(app: Litestar, host: str = "127.0.0.1", port: int = 23333, log_level: str = "info") -> None:
    """Serve until SIGTERM/SIGINT, then drain and stop."""
    build_server(app, host, port, log_level).run()
