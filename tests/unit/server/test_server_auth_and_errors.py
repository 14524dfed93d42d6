from __future__ import annotations

import msgspec
import pytest

from lmdeploy_sdk.errors import ErrorCode
from lmdeploy_sdk.server.auth import bearer_token, is_public
from lmdeploy_sdk.server.errors import engine_error, error_body
from lmdeploy_sdk.server.schemas.common import ErrorResponse


@pytest.mark.parametrize("headers, token", [
    ([(b"authorization", b"Bearer abc")], b"abc"),
    ([(b"Authorization", b"bearer  abc ")], b"abc"),
    ([(b"authorization", "Bearer ключ".encode())], "ключ".encode()),
    ([(b"authorization", b"Basic abc")], None),
    ([(b"x-api-key", b"abc")], None),
    ([], None),
])
def test_bearer_token(headers, token):
    assert bearer_token(headers) == token


@pytest.mark.parametrize("template, public", [
    ("/health", True), ("/", True), ("/chat", True), ("/static/{file_path:path}", True),
    ("/static/{file_path}", True), ("/docs", True), ("/docs/openapi.json", True), ("/docs/{path:str}", True),
    ("/v1/models", False), ("/metrics", False), ("/abort_request", False), ("/docsx", False),
    ("/v1/chat/completions", False), ("/healthz", False),
])
def test_public_routes(template, public):
    assert is_public(template) is public


@pytest.mark.parametrize("code, status, name", [
    (ErrorCode.INPUT_TOO_LONG, 400, "context_length_exceeded"),
    (ErrorCode.INVALID_REQUEST, 400, "invalid_request"),
    (ErrorCode.SESSION_BUSY, 409, "session_busy"),
    (ErrorCode.ENGINE_ERROR, 500, "engine_error"),
    (ErrorCode.ENGINE_CLOSED, 503, "engine_closed"),
    (None, 500, "engine_error"),
])
def test_engine_error_codes_map_to_statuses(code, status, name):
    err = engine_error(int(code) if code is not None else None, "why")
    assert (err.status, err.code, err.message) == (status, name, "why")


def test_error_body_is_openai_shaped():
    body = msgspec.json.decode(msgspec.json.encode(error_body(429, "slow down", code="server_busy")))
    assert body == {"error": {"message": "slow down", "type": "rate_limit_error", "param": None,
                              "code": "server_busy"}}
    assert isinstance(error_body(502, "x"), ErrorResponse) and error_body(502, "x").error.type == "server_error"
