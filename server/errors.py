"""One exception map: every failure leaves the server as OpenAI's error JSON with the right status.

Bad input of any kind (malformed JSON, invalid UTF-8, wrong types, values out of
range) is a 4xx; only a fault of the server itself is a 5xx.
"""
from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from lmdeploy_sdk.errors import ErrorCode
from lmdeploy_sdk.server.schemas.common import ErrorDetail, ErrorResponse
from lmdeploy_sdk.server.translate import InvalidRequest

log = logging.getLogger("lmdeploy_sdk.server")

# OpenAI's error "type" for each status we send.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    503: "service_unavailable",
}


class APIError(Exception):
    """An answer other than success; `headers` carry e.g. Retry-After."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> ErrorResponse:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> ErrorResponse:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return ErrorResponse(error=ErrorDetail(message=message, type=kind, param=param, code=code))


# Engine ErrorCode -> (HTTP status, OpenAI code)
_ENGINE_ERRORS = {
    ErrorCode.INPUT_TOO_LONG: (400, "context_length_exceeded"),
    ErrorCode.INVALID_REQUEST: (400, "invalid_request"),
    ErrorCode.SESSION_BUSY: (409, "session_busy"),
    ErrorCode.ENGINE_ERROR: (500, "engine_error"),
    ErrorCode.ENGINE_CLOSED: (503, "engine_closed"),
}


def engine_error(code: int | None, message: str | None) -> APIError:
    """The APIError for a Response that ended with finish_reason='error'."""
    status, name = _ENGINE_ERRORS.get(code, (500, "engine_error")) if code is not None else (500, "engine_error")
    return APIError(status, message or "the engine failed this request", code=name)


# What route handlers call their body parameter; Litestar names it as the failing "field".
_BODY_PARAM = "data"


def _validation_message(exc: ValidationException) -> tuple[str, str | None]:
    extra = exc.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        first = extra[0]
        key = first.get("key")
        if isinstance(key, str):  # msgspec writes a mapping's value as `[...]`: name the mapping
            key = key.replace("[...]", "")
        message = str(first.get("message", exc.detail))
        if key == _BODY_PARAM:  # the body as a whole is not an object
            detail = f": {message}" if message.startswith("Expected") else ""
            return f"the body must be a JSON object{detail}", None
        return (f"{message} (field {key!r})" if key else message), key
    return str(exc.detail), None


def _respond(err: ErrorResponse, status: int, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(msgspec.json.encode(err), status_code=status, headers=headers, media_type="application/json")


def handle_api_error(_: Request, exc: APIError) -> Response[Any]:
    return _respond(exc.body(), exc.status, exc.headers)


def handle_invalid_request(_: Request, exc: InvalidRequest) -> Response[Any]:
    return _respond(error_body(400, exc.message, exc.param, exc.code), 400)


# OpenAI-style codes for the HTTP errors Litestar raises itself.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def handle_http_exception(_: Request, exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        message, param = _validation_message(exc)
        return _respond(error_body(400, message, param, "invalid_request"), 400)
    status = exc.status_code
    if status >= 500:
        log.error("internal error: %s", exc.detail, exc_info=exc)
    return _respond(error_body(status, str(exc.detail), code=_HTTP_CODES.get(status, "invalid_request")), status,
                    dict(exc.headers or {}))


def handle_unicode_error(_: Request, exc: UnicodeDecodeError) -> Response[Any]:
    # msgspec raises this while decoding a body whose strings are not valid UTF-8
    return _respond(error_body(400, f"request body is not valid UTF-8: {exc.reason} at byte {exc.start}",
                               code="invalid_json"), 400)


def handle_unexpected(_: Request, exc: Exception) -> Response[Any]:
    log.error("unhandled error in a request handler", exc_info=exc)
    return _respond(error_body(500, f"internal server error: {type(exc).__name__}", code="internal_error"), 500)


EXCEPTION_HANDLERS = {
    APIError: handle_api_error,
    InvalidRequest: handle_invalid_request,
    HTTPException: handle_http_exception,
    UnicodeDecodeError: handle_unicode_error,
    Exception: handle_unexpected,
}
