"""Which session a request uses, read from its method, path and body (the ingress's only parsing)."""
from __future__ import annotations

import json

import pytest

from lmdeploy_sdk.server.ray.forward import AUTO_SESSION_ID, ForwardedRequest, SessionUse, session_use


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/generate"])
def test_a_session_id_in_the_body_names_the_session(path):
    assert session_use("POST", path, body(session_id=7, messages=[])) == SessionUse(7, ends=False)
    assert session_use("POST", path, body(session_id=7, end_session=True)) == SessionUse(7, ends=True)
    assert session_use("POST", path, body(messages=[])) is None


def test_interactive_keeps_the_session_only_in_interactive_mode():
    route = "/v1/chat/interactive"
    assert session_use("POST", route, body(session_id=3, interactive_mode=True)) == SessionUse(3, ends=False)
    assert session_use("POST", route, body(session_id=3)) == SessionUse(3, ends=True)
    assert session_use("POST", route, body(session_id=3, cancel=True)) == SessionUse(3, ends=False)
    # no id, or -1: the replica picks one (and the ingress learns it from the answer)
    assert session_use("POST", route, body(prompt="hi", interactive_mode=True)) == SessionUse(AUTO_SESSION_ID, False)


def test_delete_and_abort_name_the_session():
    assert session_use("DELETE", "/v1/sessions/42", b"") == SessionUse(42, ends=True)
    assert session_use("DELETE", "/v1/sessions/x", b"") is None
    assert session_use("POST", "/abort_request", body(session_id=5)) == SessionUse(5, ends=False)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", body(session_id="7"), body(session_id=True),
                                 body(session_id=1.0), body(session_id=-1)])
def test_anything_else_is_any_replicas_to_answer(raw):
    """Bad bodies are the replica's 400 to give; -1 names no session outside interactive."""
    assert session_use("POST", "/v1/chat/completions", raw) is None


def test_other_routes_carry_no_session():
    assert session_use("GET", "/v1/models", b"") is None
    assert session_use("POST", "/v1/encode", body(session_id=1)) is None


def test_the_asgi_scope_is_the_request_as_sent():
    request = ForwardedRequest("POST", "/v1/chat/completions", b"a=1", ((b"host", b"h:1"),), b"{}",
                               client=("10.0.0.1", 5), server=("0.0.0.0", 8000))
    scope = request.asgi_scope()
    assert scope["method"] == "POST" and scope["path"] == "/v1/chat/completions"
    assert scope["query_string"] == b"a=1" and scope["headers"] == [[b"host", b"h:1"]]
    assert scope["client"] == ["10.0.0.1", 5] and scope["type"] == "http"
