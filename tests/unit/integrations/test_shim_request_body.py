"""create() arguments become the server's request struct, with the server's validation and errors."""
from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessage

from lmdeploy_sdk.errors import ErrorCode
from lmdeploy_sdk.integrations.openai.api_errors import engine_status_error, status_error, stream_error
from lmdeploy_sdk.integrations.openai.request_body import parse_request, request_body
from lmdeploy_sdk.server.schemas.chat import ChatCompletionRequest
from lmdeploy_sdk.server.schemas.completions import CompletionRequest

PATH = "/chat/completions"


def test_sentinels_transport_args_and_extra_body():
    body = request_body({
        "model": "m", "messages": ({"role": "user", "content": "hi"},), "seed": openai.NOT_GIVEN,
        "timeout": 3, "extra_headers": {"x": "y"}, "extra_body": {"top_k": 5, "session_id": 3},
    })
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_k": 5, "session_id": 3}


def test_pydantic_messages_from_a_previous_answer():
    previous = ChatCompletionMessage(role="assistant", content="Paris.")
    req = parse_request({"model": "m", "messages": [{"role": "user", "content": "Capital?"}, previous]},
                        ChatCompletionRequest, PATH)
    assert req.messages[1].role == "assistant" and req.messages[1].content == "Paris."


def test_server_defaults_apply():
    req = parse_request({"model": "m", "prompt": "x"}, CompletionRequest, "/completions")
    assert (req.temperature, req.top_k, req.max_tokens) == (0.7, 40, 16)


@pytest.mark.parametrize("params, param", [
    ({"max_tokens": "3"}, "max_tokens"),
    ({"temperature": 3.0}, "temperature"),
    ({"n": 0}, "n"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages"),
])
def test_bad_fields_are_bad_requests_naming_the_field(params, param):
    full = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **params}
    with pytest.raises(openai.BadRequestError) as info:
        parse_request(full, ChatCompletionRequest, PATH)
    err = info.value
    assert err.status_code == 400 and err.body["param"] == param and err.body["code"] == "invalid_request"
    assert str(err) == f"Error code: 400 - {err.body['message']}"


def test_unserializable_value_is_a_bad_request():
    with pytest.raises(openai.BadRequestError, match="JSON"):
        parse_request({"model": "m", "messages": [{"role": "user", "content": object()}]}, ChatCompletionRequest, PATH)


@pytest.mark.parametrize("status, cls", [
    (400, openai.BadRequestError), (401, openai.AuthenticationError), (404, openai.NotFoundError),
    (409, openai.ConflictError), (429, openai.RateLimitError), (500, openai.InternalServerError),
    (503, openai.InternalServerError),
])
def test_status_classes(status, cls):
    err = status_error(status, "boom", PATH, "p", "c")
    assert type(err) is cls and err.status_code == status
    assert err.body == {"message": "boom", "type": err.body["type"], "param": "p", "code": "c"}
    assert err.response.status_code == status and err.request.url.path == "/chat/completions"


def test_engine_errors_map_like_the_server():
    too_long = engine_status_error(int(ErrorCode.INPUT_TOO_LONG), "too long", PATH)
    assert isinstance(too_long, openai.BadRequestError) and too_long.body["code"] == "context_length_exceeded"
    busy = engine_status_error(int(ErrorCode.SESSION_BUSY), "busy", PATH)
    assert isinstance(busy, openai.ConflictError)
    mid_stream = stream_error(int(ErrorCode.ENGINE_ERROR), "it broke", PATH)
    assert type(mid_stream) is openai.APIError and mid_stream.message == "it broke"
