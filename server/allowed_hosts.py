"""`--allowed-hosts`: refuse requests whose Host header names another server (DNS rebinding).

A page on evil.example can point its own name at 127.0.0.1 and then talk to a local
server as a same-origin site; its requests still carry `Host: evil.example`. Bound to
loopback, the server accepts only loopback names by default.
"""
from __future__ import annotations

import fnmatch
import ipaddress
from typing import Iterable

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from lmdeploy_sdk.server.errors import error_body

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def default_allowed_hosts(server_name: str) -> tuple[str, ...]:
    """Loopback names when listening on loopback; any host otherwise (empty tuple)."""
    if server_name == "localhost":
        return LOOPBACK_HOSTS
    try:
        return LOOPBACK_HOSTS if ipaddress.ip_address(server_name).is_loopback else ()
    except ValueError:  # a host name other than localhost
        return ()


def host_name(host_header: str) -> str:
    """'example.com:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class AllowedHostsMiddleware:
    """ASGI middleware: a Host header not matching any pattern (`*` and `*.domain` allowed) gets 400."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.patterns = [h.lower() for h in allowed_hosts]

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name.lower() == b"host":
                host = host_name(value.decode("latin-1").strip().lower())
                return any(fnmatch.fnmatchcase(host, p) for p in self.patterns)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = msgspec.json.encode(error_body(
            400, "the Host header names a host this server does not answer for (see --allowed-hosts)",
            param="host", code="invalid_host"))
        await send({
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body, "more_body": False})
