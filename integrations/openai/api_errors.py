"""The `openai` package's own exceptions for what the API server would answer with an error.

Code that catches `openai.BadRequestError` around a server call keeps working
unchanged in-process: the exception carries the same status, body and message
format as the one the `openai` client raises for the server's HTTP answer.
"""
from __future__ import annotations

from typing import Any

import msgspec
import openai

from lmdeploy_sdk.server.errors import engine_error, error_body
from lmdeploy_sdk.server.translate import InvalidRequest

try:  # openai >= 3 builds its exceptions on httpx2; older releases on httpx
    import httpx2 as http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as http

# Where in-process "requests" say they went (exceptions carry a request, as over HTTP).
IN_PROCESS_URL = "lmdeploy-sdk://in-process"

_STATUS_CLASSES: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}

# msgspec names the offending field as "... - at `$.field[0].x`"


def request_at(path: str) -> Any:
    """The request an in-process call says it made (exceptions and streams carry one)."""
    return http.Request("POST", f"{IN_PROCESS_URL}{path}")


def status_error(
    status: int, message: str, path: str, param: str | None = None, code: str | None = None
) -> openai.APIStatusError:
    """What `openai` raises when the server answers `status` with OpenAI's error envelope."""
    body = msgspec.to_builtins(error_body(status, message, param, code))
    response = http.Response(status, json=body, request=request_at(path))
    cls = _STATUS_CLASSES.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls(f"Error code: {status} - {message}", response=response, body=body["error"])


def invalid_request_error(err: InvalidRequest, path: str) -> openai.APIStatusError:
    return status_error(400, err.message, path, err.param, err.code)


def engine_status_error(error_code: int | None, error_message: str | None, path: str) -> openai.APIStatusError:
    """The exception for a request the engine ended with finish_reason='error' before any output."""
    err = engine_error(error_code, error_message)
    return status_error(err.status, err.message, path, err.param, err.code)


def stream_error(error_code: int | None, error_message: str | None, path: str) -> openai.APIError:
    """What `openai`'s Stream raises on the server's mid-stream error event."""
    err = engine_error(error_code, error_message)
    body = msgspec.to_builtins(err.body())["error"]
    return openai.APIError(body.get("message") or "An error occurred during streaming", request_at(path), body=body)
