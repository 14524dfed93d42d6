"""`--api-keys`: every route needs `Authorization: Bearer <key>` except the public ones below.

Public routes carry no model output and no engine control: the liveness probe, the
API docs, and the chat page's static shell (a browser cannot attach a header to a
page load; the page asks for the key and sends it on every API call). CORS
preflights (OPTIONS) carry no credentials by design and are let through too.
"""
from __future__ import annotations

import hmac
import re
from typing import Iterable

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from lmdeploy_sdk.server.errors import error_body

# Route templates that answer without a key (parameters without their type, as in scope["path_template"]).
PUBLIC_ROUTES = frozenset({"/health", "/", "/chat", "/static/{file_path}", "/openapi.json"})
# Everything under this prefix is the OpenAPI docs page and its schema.
DOCS_PREFIX = "/docs"

_PARAM_TYPE = re.compile(r"\{(\w+):[^}]+\}")


def is_public(path_template: str) -> bool:
    """For a route's path ('/static/{file_path:path}') or a request's template ('/static/{file_path}')."""
    template = _PARAM_TYPE.sub(r"{\1}", path_template)
    return template in PUBLIC_ROUTES or template == DOCS_PREFIX or template.startswith(DOCS_PREFIX + "/")


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token's raw bytes: a key with non-ASCII characters arrives as its UTF-8 bytes."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


class APIKeyMiddleware:
    """ASGI middleware; built by Litestar once per route handler with the app's keys."""

    def __init__(self, app: ASGIApp, api_keys: Iterable[str]) -> None:
        self.app = app
        self.keys = [k.encode("utf-8") for k in api_keys]

    def _authorized(self, scope: Scope) -> bool:
        given = bearer_token(scope.get("headers", []))
        if given is None:
            return False
        # compare against every key so the time taken does not say which one nearly matched
        return any([hmac.compare_digest(given, k) for k in self.keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") == "OPTIONS"
            or is_public(scope.get("path_template", scope["path"]))
            or self._authorized(scope)
        ):
            await self.app(scope, receive, send)
            return
        body = msgspec.json.encode(
            error_body(401, "a valid API key is required: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        )
        await send({
            "type": "http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                        (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body, "more_body": False})
