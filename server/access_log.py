"""Request logging and the request counter: one line per request, at INFO, with its route, status and time."""
from __future__ import annotations

import logging
import time
from typing import Callable

from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("lmdeploy_sdk.server.access")

# (method, route template, status, seconds) -> None
RequestObserver = Callable[[str, str, int, float], None]


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, observe: RequestObserver) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app fails before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("path_template") or scope["path"]
            method = scope.get("method", "")
            client = scope.get("client") or ("-", 0)
            log.info("%s:%s %s %s -> %d in %.1f ms", client[0], client[1], method, scope["path"], status,
                     elapsed * 1000)
            self.observe(method, route, status, elapsed)
