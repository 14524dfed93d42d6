"""Bodies no client can hurt the server with: nesting, content types, Host headers, sizes,
and the smaller validation points; plus an event loop that keeps answering during big requests."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from api_server_harness import running_server
from test_server_bad_input import assert_error

from lmdeploy_sdk.server import ServerSettings, create_app
from lmdeploy_sdk.server.allowed_hosts import LOOPBACK_HOSTS

BODY_ROUTES = ["/v1/chat/completions", "/v1/completions", "/generate", "/v1/encode", "/v1/chat/interactive",
               "/abort_request"]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def chat(model: str, **changes) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, **changes}


def test_body_routes_are_all_checked(server):
    posted = {r.path for r in server.app.routes if "POST" in r.methods}
    assert posted == set(BODY_ROUTES)


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("body", [
    b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # the reproducer
    b'{"model": "m", "x": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",  # inside an unknown field
], ids=["arrays", "unknown-field"])
def test_deep_nesting_is_a_400_naming_the_field(http, route, body):
    assert_error(http.post(route, content=body, headers=JSON), 400, param="x", code="json_too_deep")


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("headers, content", [
    ({"content-type": "text/plain"}, b"{}"),
    ({"content-type": "application/x-www-form-urlencoded"}, b"a=b"),
    ({"content-type": "multipart/form-data; boundary=x"}, b"--x--"),
    ({}, b"{}"),
])
def test_bodies_that_are_not_json_get_415(http, route, headers, content):
    """What a web page may POST cross-site without a CORS preflight."""
    assert_error(http.post(route, content=content, headers=headers), 415, code="unsupported_media_type")


def test_json_with_a_charset_and_json_suffix_types_are_fine(http, model_name):
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        resp = http.post("/v1/chat/completions", content=json.dumps(chat(model_name)),
                         headers={"content-type": content_type})
        assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("raw", [b"[]", b"null", b"5", b'"x"'])
def test_a_body_that_is_not_an_object(http, raw):
    err = assert_error(http.post("/v1/chat/completions", content=raw, headers=JSON), 400, code="invalid_request")
    assert err["param"] is None and "JSON object" in err["message"]


def test_parse_errors_have_a_code(http):
    assert_error(http.post("/generate", content=b'{"prompt": ', headers=JSON), 400, code="invalid_json")


def test_schema_valid_values_are_accepted(http, model_name):
    ok = [
        chat(model_name, n=1.0, max_tokens=1.0),  # JSON Schema: 1.0 is an integer
        chat(model_name, messages=[{"role": "user", "content": None}]),
        chat(model_name, messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": None},
                                   {"role": "user", "content": "again"}]),
    ]
    for body in ok:
        resp = http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, (body, resp.text)
    assert http.post("/generate", json={"prompt": "hi", "max_tokens": 1.0, "top_k": 2.0}).status_code == 200


@pytest.mark.parametrize("route, changes, param", [
    ("/v1/chat/completions", {"n": 1.5}, "n"),
    ("/v1/chat/completions", {"max_tokens": 2**40}, "max_tokens"),
    ("/v1/chat/completions", {"top_k": 2**40}, "top_k"),
    ("/v1/chat/completions", {"session_id": 2**70}, "session_id"),
    ("/v1/chat/completions", {"session_id": -3}, "session_id"),
    ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs"),  # without logprobs=true
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "messages"),
    ("/v1/completions", {"session_id": 2**53}, "session_id"),
    ("/generate", {"session_id": 2**70}, "session_id"),
    ("/generate", {"max_tokens": 2**63}, "max_tokens"),
    ("/v1/chat/interactive", {"session_id": 2**70}, "session_id"),
    ("/abort_request", {"session_id": 2**70}, "session_id"),
])
def test_out_of_range_values_name_the_field(http, model_name, route, changes, param):
    base = {"/v1/chat/completions": chat(model_name), "/v1/completions": {"model": model_name, "prompt": "hi"},
            "/generate": {"prompt": "hi"}, "/v1/chat/interactive": {"prompt": "hi"}, "/abort_request": {}}[route]
    assert_error(http.post(route, json={**base, **changes}), 400, param=param)


def test_a_too_large_body_gets_413(http):
    resp = http.post("/v1/encode", content=b'{"input": "' + b"a" * 11_000_000 + b'"}', headers=JSON)
    assert_error(resp, 413, code="request_too_large")


def test_text_longer_than_session_len_can_hold_is_refused_before_tokenizing(http, model_name):
    started = time.monotonic()
    resp = http.post("/v1/chat/completions", json=chat(model_name, messages=[{"role": "user",
                                                                               "content": "hello " * 1_600_000}]))
    assert_error(resp, 400, param="messages", code="context_length_exceeded")
    assert time.monotonic() - started < 2  # tokenizing it would take ~5 s


def test_health_answers_while_a_10_mb_request_is_tokenized(server):
    """9.6 MB of text to /v1/encode takes seconds to tokenize; it runs off the event loop."""
    body = json.dumps({"input": "hello " * 1_600_000}).encode()
    done = {}

    def big_request():
        started = time.monotonic()
        resp = httpx.post(f"{server.url}/v1/encode", content=body, headers=JSON, timeout=120)
        done["status"], done["seconds"] = resp.status_code, time.monotonic() - started

    worker = threading.Thread(target=big_request)
    worker.start()
    waits = []
    with httpx.Client(base_url=server.url, timeout=30) as probe:
        time.sleep(0.5)  # the body is sent and being tokenized
        while worker.is_alive():
            started = time.monotonic()
            assert probe.get("/health").status_code == 200
            waits.append(time.monotonic() - started)
            time.sleep(0.05)
    worker.join()
    assert done["status"] == 200 and done["seconds"] > 1.0, done  # it really was a long request
    assert len(waits) >= 5 and max(waits) < 0.2, (max(waits), len(waits))


def test_other_hosts_are_refused(tiny_engine):
    settings = ServerSettings(allowed_hosts=LOOPBACK_HOSTS)
    with running_server(create_app(tiny_engine, settings)) as s, \
            httpx.Client(base_url=s.url, timeout=30) as http:
        port = s.url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            assert http.get("/v1/models", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
            assert_error(http.get("/v1/models", headers={"host": host}), 400, param="host", code="invalid_host")


def test_wildcard_domains(tiny_engine):
    settings = ServerSettings(allowed_hosts=("*.example.com",))
    with running_server(create_app(tiny_engine, settings)) as s, \
            httpx.Client(base_url=s.url, timeout=30) as http:
        assert http.get("/health", headers={"host": "api.example.com"}).status_code == 200
        assert http.get("/health", headers={"host": "example.org"}).status_code == 400


def test_a_non_ascii_key_matches(tiny_engine):
    key = "ключ-🔑"
    with running_server(create_app(tiny_engine, ServerSettings(api_keys=(key,)))) as s:
        with httpx.Client(base_url=s.url, timeout=30) as http:
            good = {"authorization": b"Bearer " + key.encode()}
            assert http.get("/v1/models", headers=good).status_code == 200
            prefix = {"authorization": b"Bearer " + "ключ".encode()}
            assert http.get("/v1/models", headers=prefix).status_code == 401
