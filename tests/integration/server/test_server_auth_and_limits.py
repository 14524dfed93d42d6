"""Acceptance 4 (API keys on every route), CORS, and the bounded queue (429 + Retry-After)."""
from __future__ import annotations

import time

import httpx
import pytest
from api_server_harness import running_server

from lmdeploy_sdk.server import ServerSettings, create_app
from lmdeploy_sdk.server.auth import is_public

KEY = "sk-test-key"
# What may answer without a key; anything else the app routes must be refused.
EXPECTED_PUBLIC = {"/health", "/", "/chat", "/static/{file_path:path}", "/docs", "/docs/openapi.json",
                   "/docs/swagger", "/docs/{path:str}", "/docs/oauth2-redirect.html", "/openapi.json",
                   "/docs/assets/{file_path:path}"}


@pytest.fixture(scope="module")
def keyed(tiny_engine):
    settings = ServerSettings(api_keys=(KEY, "second-key"), allow_origins=("https://chat.example",))
    with running_server(create_app(tiny_engine, settings)) as s:
        yield s


def _concrete(path: str) -> str:
    return path.replace("{file_path:path}", "chat.js").replace("{path:str}", "swagger").replace("{session_id:int}", "1")


def test_public_routes_are_exactly_the_expected_ones(keyed):
    public = {r.path for r in keyed.app.routes if is_public(r.path)}
    assert public == EXPECTED_PUBLIC


def test_every_other_route_needs_the_key(keyed):
    checked = 0
    with httpx.Client(base_url=keyed.url, timeout=30) as http:
        for route in keyed.app.routes:
            if is_public(route.path):
                continue
            for method in sorted(route.methods - {"OPTIONS", "HEAD"}):
                url = _concrete(route.path)
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                    resp = http.request(method, url, headers=headers, json={})
                    assert resp.status_code == 401, (method, url, headers, resp.text)
                    assert resp.json()["error"]["code"] == "invalid_api_key"
                    assert resp.headers["www-authenticate"] == "Bearer"
                authed = http.request(method, url, headers={"Authorization": f"Bearer {KEY}"}, json={})
                assert authed.status_code != 401, (method, url)
                checked += 1
    assert checked >= 8  # the OpenAI, LMDeploy and metrics routes


def test_public_routes_answer_without_a_key(keyed):
    with httpx.Client(base_url=keyed.url, timeout=30) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/docs/openapi.json").status_code == 200
        assert http.get("/chat").status_code == 200
        assert http.get("/static/chat.js").status_code == 200


def test_second_key_works_and_models_are_listed(keyed, model_name):
    resp = httpx.get(f"{keyed.url}/v1/models", headers={"Authorization": "Bearer second-key"}, timeout=30)
    assert resp.json()["data"][0]["id"] == model_name


def test_cors_preflight_and_headers(keyed):
    origin = {"Origin": "https://chat.example"}
    pre = httpx.options(f"{keyed.url}/v1/chat/completions", timeout=30, headers={
        **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code in (200, 204)
    assert pre.headers["access-control-allow-origin"] == "https://chat.example"
    resp = httpx.get(f"{keyed.url}/health", headers=origin, timeout=30)
    assert resp.headers["access-control-allow-origin"] == "https://chat.example"
    other = httpx.get(f"{keyed.url}/health", headers={"Origin": "https://evil.example"}, timeout=30)
    assert "access-control-allow-origin" not in other.headers


def test_full_queue_answers_429_with_retry_after(tiny_engine, model_name):
    settings = ServerSettings(max_concurrent_requests=2, retry_after_s=3)
    with running_server(create_app(tiny_engine, settings)) as s:
        body = {"model": model_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 150,
                "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=s.url, timeout=60) as http:
            with http.stream("POST", "/v1/chat/completions", json={**body, "n": 2}) as first:
                assert first.status_code == 200
                lines = first.iter_lines()  # keep a reference: a collected iterator closes the connection
                next(lines)  # the two slots are taken once the stream has begun
                busy = http.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 1})
                assert busy.status_code == 429
                assert busy.headers["retry-after"] == "3"
                assert busy.json()["error"]["type"] == "rate_limit_error"
            # the stream is closed: its slots come free as soon as the server sees the disconnect
            deadline = time.monotonic() + 10
            while (again := http.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 1})
                   ).status_code == 429 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert again.status_code == 200
            too_big = http.post("/v1/chat/completions", json={**body, "stream": False, "n": 3})
            assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "too_many_sequences"
