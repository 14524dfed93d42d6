"""Two replicas behind one address (issue 21, acceptance 1 and 2): the openai client's chat,
streaming and completions; load spread over both; a session's turns reach the replica that
holds it."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from ray_harness import MODEL_NAME, REPLICA_HEADER, deploy, ray_server, replica_counts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_replicas(smollm2_dir):  # the last test scales it down to one
    with ray_server(smollm2_dir, replicas=2) as server:
        yield server


@pytest.fixture
def http(two_replicas):
    with httpx.Client(base_url=two_replicas.url, timeout=120) as client:
        yield client


def test_the_openai_client_works_through_one_address(two_replicas):
    client = openai.OpenAI(base_url=f"{two_replicas.url}/v1", api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "Say hello."}]
    chat = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=8)
    assert chat.choices[0].message.content and chat.usage.completion_tokens > 0
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_tokens=8, stream=True) if c.choices]
    assert "".join(pieces)
    completion = client.completions.create(model=MODEL_NAME, prompt="The capital of France is", max_tokens=6)
    assert completion.choices[0].text
    assert [m.id for m in client.models.list().data] == [MODEL_NAME]


def test_requests_spread_over_both_replicas(two_replicas, http):
    before = replica_counts(http.get("/metrics").text)
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Count to three."}], "max_tokens": 8}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: http.post("/v1/chat/completions", json=body), range(16)))
    assert all(a.status_code == 200 for a in answers)
    served_by = {a.headers[REPLICA_HEADER] for a in answers}
    after = replica_counts(http.get("/metrics").text)
    assert len(after) == 2 and set(after) >= served_by
    handled = {r: after[r] - before.get(r, 0) for r in after}
    assert sum(handled.values()) >= 16 and all(n > 0 for n in handled.values()), handled


def test_interactive_sessions_stay_on_their_replica(http):
    holders: dict[int, str] = {}
    for turn in range(3):
        for sid in range(101, 109):  # 8 sessions, turns interleaved
            r = http.post("/v1/chat/interactive", json={
                "session_id": sid, "prompt": f"Turn {turn}: tell me a fact.", "interactive_mode": True,
                "request_output_len": 6})
            assert r.status_code == 200, r.text
            answer = r.json()
            if turn == 0:
                holders[sid] = r.headers[REPLICA_HEADER]
                assert answer["history_tokens"] == 0
            else:
                assert r.headers[REPLICA_HEADER] == holders[sid]
                assert answer["history_tokens"] > 0, (sid, turn, answer)
    for sid in holders:  # ending the session frees it; the id then starts afresh anywhere
        assert http.post("/v1/chat/interactive", json={"session_id": sid, "prompt": ""}).status_code == 200


def test_chat_completion_sessions_reuse_their_cache(http):
    conversations = {sid: [] for sid in range(201, 209)}
    holders: dict[int, str] = {}
    for turn in range(3):
        for sid, messages in conversations.items():
            messages.append({"role": "user", "content": f"Question {turn}: name a colour."})
            r = http.post("/v1/chat/completions", json={"model": MODEL_NAME, "messages": messages,
                                                        "max_tokens": 6, "session_id": sid})
            assert r.status_code == 200, r.text
            answer = r.json()
            messages.append({"role": "assistant", "content": answer["choices"][0]["message"]["content"]})
            holders.setdefault(sid, r.headers[REPLICA_HEADER])
            assert r.headers[REPLICA_HEADER] == holders[sid]
            if turn:
                assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] > 0, (sid, turn, answer["usage"])
    for sid in conversations:
        assert http.delete(f"/v1/sessions/{sid}").status_code == 200


def test_an_auto_session_id_is_routed_back(http):
    first = http.post("/v1/chat/interactive", json={"prompt": "Hello!", "interactive_mode": True,
                                                    "request_output_len": 4}).json()
    second = http.post("/v1/chat/interactive", json={"session_id": first["session_id"], "prompt": "And?",
                                                     "interactive_mode": True, "request_output_len": 4})
    assert second.status_code == 200 and second.json()["history_tokens"] > 0


def _stream_to_the_end(url: str, started: threading.Barrier) -> tuple[str, str | None, str | None]:
    """(replica, finish_reason, error code) of one streamed chat."""
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Tell a story."}], "max_tokens": 96,
            "ignore_eos": True, "stream": True}
    finish = error = None
    with httpx.Client(timeout=180) as client, client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        replica = r.headers[REPLICA_HEADER]
        waited = False
        for line in r.iter_lines():
            if not waited:
                waited = True
                started.wait()
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if "error" in event:
                    error = event["error"]["code"]
                elif event["choices"] and event["choices"][0]["finish_reason"]:
                    finish = event["choices"][0]["finish_reason"]
    return replica, finish, error


def test_scaling_down_lets_running_requests_finish(two_replicas, smollm2_dir, http):
    """Ray stops a replica it removes only after its running requests end (the graceful drain).
    (serve.run redeploys by replacing the replicas, one by one: each old one is drained.)"""
    started = threading.Barrier(7)
    with ThreadPoolExecutor(6) as pool:
        streams = [pool.submit(_stream_to_the_end, two_replicas.url, started) for _ in range(6)]
        started.wait(timeout=120)
        deploy(smollm2_dir, replicas=1)  # returns once the application runs one replica
        outcomes = [s.result(timeout=300) for s in streams]
    assert len({replica for replica, _, _ in outcomes}) == 2, outcomes  # both replicas had streams
    assert all(finish == "length" and error is None for _, finish, error in outcomes), outcomes
    labels = {line.split('replica="', 1)[1].split('"', 1)[0] for line in http.get("/metrics").text.splitlines()
              if 'replica="' in line}
    assert len(labels) == 1, labels
