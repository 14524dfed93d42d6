"""Sessions on the server: a cap and an idle TTL, ending them from every route, and ownership by API key."""
from __future__ import annotations

import threading
import time
from typing import Iterator

import httpx
import pytest
from api_server_harness import ENGINE_CONFIG, RunningServer, running_server

from lmdeploy_sdk import AsyncEngine, TurbomindEngineConfig
from lmdeploy_sdk.server import APIClient, ServerSettings, create_app
from lmdeploy_sdk.server.sessions import AUTO_ID_LOW, MAX_SESSION_ID

CAP = 8
KEY_A, KEY_B = "key-a", "key-b"


@pytest.fixture()
def engine(tiny_llama) -> Iterator[AsyncEngine]:
    """A fresh engine per test: these tests count the engine's sessions and KV blocks."""
    e = AsyncEngine(str(tiny_llama), TurbomindEngineConfig(**ENGINE_CONFIG), model_name="tiny-llama")
    yield e
    e.close()


@pytest.fixture()
def capped(engine) -> Iterator[RunningServer]:
    with running_server(create_app(engine, ServerSettings(max_sessions=CAP))) as s:
        yield s


@pytest.fixture()
def keyed(engine) -> Iterator[RunningServer]:
    with running_server(create_app(engine, ServerSettings(api_keys=(KEY_A, KEY_B)))) as s:
        yield s


def _engine_sessions(engine: AsyncEngine, expected: int) -> int:
    """The engine's session count once it has applied the queued commands (waits up to 10 s for `expected`)."""
    deadline = time.monotonic() + 10
    while True:
        count = engine.stats().sessions
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _generate(http: httpx.Client, session_id: int, prompt_len: int = 120, **extra) -> httpx.Response:
    ids = [(session_id * 7 + i) % 1000 + 10 for i in range(prompt_len)]
    return http.post("/generate", json={"input_ids": ids, "max_tokens": 1, "session_id": session_id, **extra})


def test_memory_is_flat_after_the_cap(capped, engine):
    """The issue's reproducer, scaled down: rounds of requests, each on a new session id with a
    long prompt; past the cap, sessions, engine sessions and KV blocks stop growing."""
    seen = []
    with httpx.Client(base_url=capped.url, timeout=60) as http:
        for round_ in range(3):
            for i in range(3 * CAP):
                assert _generate(http, round_ * 1000 + i).status_code == 200
            seen.append((capped.metric("lmdeploy_sdk_sessions"), _engine_sessions(engine, CAP),
                         capped.metric("lmdeploy_sdk_kv_blocks_used")))
    assert seen[0][:2] == (CAP, CAP)
    assert seen[1] == seen[0] and seen[2] == seen[0], seen


def test_the_most_recent_sessions_are_kept(capped, engine):
    with httpx.Client(base_url=capped.url, timeout=60) as http:
        for sid in range(CAP + 3):
            _generate(http, sid, prompt_len=40)
        kept = _generate(http, CAP + 2, prompt_len=40).json()["meta_info"]["cached_tokens"]
        dropped = _generate(http, 0, prompt_len=40).json()["meta_info"]["cached_tokens"]
    assert kept > 0 and dropped == 0


def test_idle_sessions_expire(engine):
    with running_server(create_app(engine, ServerSettings(session_ttl_s=0.4))) as s:
        with httpx.Client(base_url=s.url, timeout=60) as http:
            for sid in range(3):
                _generate(http, sid)
            assert _engine_sessions(engine, 3) == 3
            time.sleep(1.0)
            assert s.metric("lmdeploy_sdk_sessions") == 0
            assert _engine_sessions(engine, 0) == 0


def test_a_session_in_flight_is_never_evicted(engine):
    with running_server(create_app(engine, ServerSettings(max_sessions=1))) as s:
        with httpx.Client(base_url=s.url, timeout=60) as http:
            out = {}

            def long_request():
                out["resp"] = _generate(http, 1, prompt_len=10, max_tokens=150, ignore_eos=True, temperature=0)

            worker = threading.Thread(target=long_request)
            worker.start()
            time.sleep(0.3)
            for sid in range(2, 6):  # each of these would evict session 1 if it were idle
                assert _generate(http, sid).status_code == 200
            worker.join()
            assert out["resp"].status_code == 200
            assert out["resp"].json()["meta_info"]["completion_tokens"] == 150


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions", "/generate"])
def test_end_session_field_ends_it(capped, engine, route):
    body = {"session_id": 42, "max_tokens": 1, "end_session": True}
    if route == "/v1/chat/completions":
        body |= {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]}
    elif route == "/v1/completions":
        body |= {"model": "tiny-llama", "prompt": "hi"}
    else:
        body |= {"prompt": "hi"}
    with httpx.Client(base_url=capped.url, timeout=60) as http:
        assert http.post(route, json={**body, "end_session": False}).status_code == 200
        assert capped.metric("lmdeploy_sdk_sessions") == 1 and _engine_sessions(engine, 1) == 1
        assert http.post(route, json=body).status_code == 200
    assert capped.metric("lmdeploy_sdk_sessions") == 0 and _engine_sessions(engine, 0) == 0


def test_delete_ends_a_session(capped, engine):
    with httpx.Client(base_url=capped.url, timeout=60) as http:
        _generate(http, 9)
        assert _engine_sessions(engine, 1) == 1
        resp = http.delete("/v1/sessions/9")
        assert resp.status_code == 200 and resp.json() == {"session_id": 9, "ended": True}
        assert _engine_sessions(engine, 0) == 0
        gone = http.delete("/v1/sessions/9")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "session_not_found"


def test_auto_session_ids_are_random(capped):
    with httpx.Client(base_url=capped.url, timeout=60) as http:
        ids = [http.post("/v1/chat/interactive", json={"prompt": "hi", "request_output_len": 1,
                                                       "interactive_mode": True}).json()["session_id"]
               for _ in range(4)]
    assert all(AUTO_ID_LOW <= i <= MAX_SESSION_ID for i in ids)
    assert len(set(ids)) == 4 and {b - a for a, b in zip(ids, ids[1:])} != {1}


def test_another_keys_session_does_not_exist(keyed, engine):
    with httpx.Client(base_url=keyed.url, timeout=60) as http:
        a, b = _auth(KEY_A), _auth(KEY_B)
        first = http.post("/v1/chat/interactive", headers=a,
                          json={"prompt": "my secret is 1234", "request_output_len": 2, "interactive_mode": True})
        sid = first.json()["session_id"]
        chat = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                "session_id": sid}
        refused = [
            http.post("/v1/chat/interactive", headers=b, json={"prompt": "what was my secret?", "session_id": sid,
                                                              "interactive_mode": True}),
            http.post("/v1/chat/interactive", headers=b, json={"session_id": sid, "cancel": True}),
            http.post("/v1/chat/interactive", headers=b, json={"session_id": sid, "interactive_mode": False}),
            http.post("/v1/chat/completions", headers=b, json=chat),
            http.post("/generate", headers=b, json={"prompt": "x", "max_tokens": 1, "session_id": sid}),
            http.post("/abort_request", headers=b, json={"session_id": sid}),
            http.delete(f"/v1/sessions/{sid}", headers=b),
        ]
        for resp in refused:
            assert resp.status_code == 404, resp.text
            assert resp.json()["error"]["code"] == "session_not_found" and "secret" not in resp.text
        # still A's, with its history
        again = http.post("/v1/chat/interactive", headers=a,
                          json={"prompt": "and again", "request_output_len": 1, "session_id": sid,
                                "interactive_mode": True})
        assert again.status_code == 200 and again.json()["history_tokens"] > 0


def test_abort_all_stops_only_the_callers_requests(keyed):
    with httpx.Client(base_url=keyed.url, timeout=60) as http:
        out = {}

        def long_request():
            out["resp"] = http.post("/generate", headers=_auth(KEY_A), json={
                "prompt": "go", "max_tokens": 120, "ignore_eos": True, "temperature": 0})

        worker = threading.Thread(target=long_request)
        worker.start()
        time.sleep(0.3)
        assert http.post("/abort_request", headers=_auth(KEY_B), json={"abort_all": True}).json() == {"aborted": 0}
        worker.join()
        assert out["resp"].json()["meta_info"]["finish_reason"] == "length"


def test_keyless_sessions_are_shared(capped):
    """Documented: without API keys anyone who knows a session id may use it."""
    with httpx.Client(base_url=capped.url, timeout=60) as one, httpx.Client(base_url=capped.url, timeout=60) as two:
        sid = one.post("/v1/chat/interactive", json={"prompt": "hi", "request_output_len": 1,
                                                     "interactive_mode": True}).json()["session_id"]
        other = two.post("/v1/chat/interactive", json={"prompt": "more", "request_output_len": 1,
                                                       "session_id": sid, "interactive_mode": True})
        assert other.status_code == 200 and other.json()["history_tokens"] > 0


def test_api_client_ends_a_session(capped, engine):
    with httpx.Client(base_url=capped.url, timeout=60) as http:
        _generate(http, 11)
    assert _engine_sessions(engine, 1) == 1
    with APIClient(capped.url) as client:
        assert client.end_session(11) is True
        assert client.end_session(11) is False
    assert _engine_sessions(engine, 0) == 0
