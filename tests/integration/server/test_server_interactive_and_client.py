"""`/v1/chat/interactive` (stateful sessions), `/generate`, `/abort_request`, and `APIClient` on top."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from lmdeploy_sdk.server import APIClient, APIClientError
from lmdeploy_sdk.server.schemas.chat import ChatCompletionResponse


@pytest.fixture(scope="module")
def client(server):
    with APIClient(server.url) as c:
        yield c


def test_models_and_encode(client, model_name, tiny_engine):
    assert client.available_models == [model_name]
    ids, length = client.encode("hello world", add_bos=False)
    assert ids == tiny_engine.tokenizer.encode("hello world", add_special_tokens=False) and length == len(ids)
    batch, lengths = client.encode(["a", "b c"], add_bos=False)
    assert lengths == [len(x) for x in batch] and len(batch) == 2
    templated, _ = client.encode("hi", do_preprocess=True)
    assert templated == tiny_engine.tokenizer.encode_prompt("hi")


def test_interactive_session_keeps_history(client, server):
    sid = 9001
    first = next(client.chat_interactive_v1("Hello there", session_id=sid, interactive_mode=True,
                                            request_output_len=6, temperature=0))
    assert first["history_tokens"] == 0 and first["tokens"] >= 1 and first["session_id"] == sid
    second = list(client.chat_interactive_v1("Tell me more", session_id=sid, interactive_mode=True, stream=True,
                                             request_output_len=6, temperature=0))
    assert second[-1]["finish_reason"] in ("stop", "length")
    assert all(c["history_tokens"] == first["input_tokens"] + first["tokens"] for c in second)
    assert second[0]["input_tokens"] > 0
    # the engine still holds the session's KV between turns
    assert server.metric("lmdeploy_sdk_kv_blocks_used") > 0
    # an empty prompt with interactive_mode=False ends the session
    end = next(client.chat_interactive_v1("", session_id=sid, interactive_mode=False))
    assert end["finish_reason"] == "stop"
    fresh = next(client.chat_interactive_v1("Hello there", session_id=sid, interactive_mode=True,
                                            request_output_len=6, temperature=0))
    assert fresh["history_tokens"] == 0
    assert fresh["text"] == first["text"]  # same prompt, same greedy answer on a fresh session
    next(client.chat_interactive_v1("", session_id=sid, interactive_mode=False))


def test_interactive_cancel_stops_a_running_turn(client):
    sid = 9002
    result = {}

    def long_turn():
        result["chunks"] = list(client.chat_interactive_v1("go on", session_id=sid, interactive_mode=True,
                                                           stream=True, request_output_len=200, ignore_eos=True))

    worker = threading.Thread(target=long_turn)
    worker.start()
    time.sleep(0.3)
    cancelled = next(client.chat_interactive_v1("", session_id=sid, cancel=True))
    worker.join(timeout=30)
    assert cancelled["finish_reason"] == "abort"
    assert result["chunks"][-1]["finish_reason"] == "abort"
    assert result["chunks"][-1]["tokens"] < 200
    next(client.chat_interactive_v1("", session_id=sid, interactive_mode=False))


def test_busy_session_is_a_409(client, model_name):
    sid = 9003
    stream = client.chat_interactive_v1("go on", session_id=sid, interactive_mode=True, stream=True,
                                        request_output_len=100, ignore_eos=True)
    next(stream)
    with pytest.raises(APIClientError) as err:
        next(client.chat_interactive_v1("again", session_id=sid, interactive_mode=True))
    assert err.value.status == 409
    stream.close()
    time.sleep(0.2)
    next(client.chat_interactive_v1("", session_id=sid, interactive_mode=False))


def test_chat_and_completions_v1(client, model_name):
    full = next(client.chat_completions_v1(model_name, [{"role": "user", "content": "hi"}], max_tokens=5,
                                           temperature=0))
    chunks = list(client.chat_completions_v1(model_name, "hi", max_tokens=5, temperature=0, stream=True))
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == full["choices"][0]["message"]["content"]
    comp = next(client.completions_v1(model_name, "Once", max_tokens=3, temperature=0))
    assert comp["object"] == "text_completion" and comp["usage"]["completion_tokens"] <= 3


def test_openai_style_namespace(client, model_name):
    resp = client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                          temperature=0)
    assert isinstance(resp, ChatCompletionResponse) and resp.model == model_name
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0, stream=True) if c.choices)
    assert text == resp.choices[0].message.content
    comp = client.completions.create(prompt="Once", max_tokens=2)
    assert comp.usage.completion_tokens <= 2


def test_client_raises_server_errors(client):
    with pytest.raises(APIClientError) as err:
        next(client.chat_completions_v1("no-such-model", "hi"))
    assert err.value.status == 404 and "no-such-model" in err.value.message


def test_generate_route(server, tiny_engine):
    ids = tiny_engine.tokenizer.encode("The sky is", add_special_tokens=True)
    body = {"input_ids": ids, "max_tokens": 5, "temperature": 0, "ignore_eos": True, "return_logprob": True}
    full = httpx.post(f"{server.url}/generate", json=body, timeout=30).json()
    assert len(full["output_ids"]) == 5 and full["meta_info"]["prompt_tokens"] == len(ids)
    assert [p[1] for p in full["meta_info"]["output_token_logprobs"]] == full["output_ids"]
    with httpx.stream("POST", f"{server.url}/generate", json={**body, "stream": True}, timeout=30) as resp:
        events = [line[5:].strip() for line in resp.iter_lines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    parts = [json.loads(e) for e in events[:-1]]
    assert sum((p["output_ids"] for p in parts), []) == full["output_ids"]
    assert "".join(p["text"] for p in parts) == full["text"]


def test_abort_request_by_id(server, model_name):
    body = {"model": model_name, "messages": [{"role": "user", "content": "go"}], "max_tokens": 200,
            "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30) as resp:
        lines = resp.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        request_id = json.loads(first[5:])["id"]
        aborted = httpx.post(f"{server.url}/abort_request", json={"request_id": request_id}, timeout=30).json()
        rest = [line for line in lines if line.startswith("data:")]
    assert aborted == {"aborted": 1}
    assert rest[-1] == "data: [DONE]"
    last = json.loads(rest[-2][5:])
    assert last["choices"][0]["finish_reason"] == "abort"
    none = httpx.post(f"{server.url}/abort_request", json={"request_id": "chatcmpl-unknown"}, timeout=30).json()
    assert none == {"aborted": 0}
