"""What the OpenAPI schema says about our answers beyond the handlers' types.

Every route documents the error statuses it can send (so schema-driven clients and
checkers know them), and streaming routes document their SSE / NDJSON body.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIType

from lmdeploy_sdk.server.schemas.common import ErrorResponse

_DESCRIPTIONS = {
    400: "Invalid request (malformed or too deeply nested JSON, wrong types, values out of range, prompt too "
         "long, a Host header the server does not answer for)",
    401: "Missing or wrong API key",
    404: "Unknown model, or a session that does not exist (or is another API key's)",
    409: "The session already has a running request",
    413: "The body is larger than the server accepts",
    415: "The body is not JSON (Content-Type must be application/json)",
    429: "The server is at capacity; retry after Retry-After seconds",
    499: "The client closed the connection",
    500: "Internal server error",
    503: "The server is loading or shutting down",
}
# Statuses any route may send: Host check, auth, a closed client, an internal fault, loading/shutdown.
COMMON = (400, 401, 499, 500, 503)
# Statuses of the routes that take a JSON body.
BODY = (413, 415) + COMMON
# Statuses of the routes that run generation.
GENERATION = (404, 409, 429) + BODY


def responses(success: type | None, statuses: tuple[int, ...] = COMMON) -> dict[int, ResponseSpec]:
    out: dict[int, ResponseSpec] = {}
    if success is not None:
        out[200] = ResponseSpec(success, description="Success")
    for status in statuses:
        out[status] = ResponseSpec(ErrorResponse, description=_DESCRIPTIONS[status])
    return out


# One server-sent event as SSE parsers (and schema checkers) see it: its fields, `data` holding our JSON.
_SSE_EVENT = dict(
    type=OpenAPIType.OBJECT,
    properties={
        "data": Schema(type=OpenAPIType.STRING),
        "event": Schema(type=OpenAPIType.STRING),
        "id": Schema(type=OpenAPIType.STRING),
        "retry": Schema(type=OpenAPIType.INTEGER),
    },
)


def _add_stream_body(op: Operation, media_type: str, description: str, schema: dict | None = None) -> None:
    if not op.responses or "200" not in op.responses:
        return
    ok: Any = op.responses["200"]
    if isinstance(ok, OpenAPIResponse):
        ok.content = dict(ok.content or {})
        spec = schema or dict(type=OpenAPIType.STRING)
        ok.content[media_type] = OpenAPIMediaType(schema=Schema(description=description, **spec))


@dataclass
class SSEOperation(Operation):
    """A route that streams `data: <chunk JSON>` events ending with `data: [DONE]` when stream=true."""

    def __post_init__(self) -> None:
        _add_stream_body(self, "text/event-stream",
                         "With stream=true: server-sent events, one JSON chunk each, then [DONE]", _SSE_EVENT)


@dataclass
class NDJSONOperation(Operation):
    """A route that streams one JSON object per line when stream=true."""

    def __post_init__(self) -> None:
        _add_stream_body(self, "application/x-ndjson", "With stream=true: one JSON object per line")
