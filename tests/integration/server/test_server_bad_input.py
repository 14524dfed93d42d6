"""Acceptance 3 (hand-written half): bad input gets a 4xx with OpenAI's error body, never a 5xx."""
from __future__ import annotations

import httpx
import pytest
from api_server_harness import SESSION_LEN

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def chat_body(model: str, **changes) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **changes}


def assert_error(resp: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.mark.parametrize("raw", [b"{bad json", b"", b"[1, 2", b"\xff\xfe\x00", b'{"model": "x", "messages": ['])
def test_malformed_json(http, raw):
    assert_error(http.post(CHAT, content=raw, headers={"content-type": "application/json"}), 400)


def test_invalid_utf8_inside_a_string(http, model_name):
    raw = b'{"model": "' + model_name.encode() + b'", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}'
    err = assert_error(http.post(CHAT, content=raw, headers={"content-type": "application/json"}), 400)
    assert "UTF-8" in err["message"]


@pytest.mark.parametrize("changes, param", [
    ({"messages": {"role": "user", "content": "hi"}}, "messages"),  # a plain string is LMDeploy's one user turn
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, None),
    ({"messages": [{"role": "user", "content": 5}]}, None),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 3.5}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"n": 0}, "n"),
    ({"n": 10_000}, "n"),
    ({"stream": "yes"}, "stream"),
    ({"stop": 5}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"top_logprobs": 50, "logprobs": True}, "top_logprobs"),
    ({"seed": 2**70}, "seed"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"presence_penalty": 1.0}, "presence_penalty"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "format": "nope"},
                                                                 "strict": True}}}, "response_format"),
    ({"response_format": {"type": "regex_schema", "regex_schema": "(unclosed"}}, "response_format"),
    ({"response_format": {"type": "grammar", "grammar": "start: missing_rule"}}, "response_format"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 500}}, "logit_bias"),
    ({"tool_choice": "required"}, "tool_choice"),
])
def test_wrong_types_and_values(http, model_name, changes, param):
    assert_error(http.post(CHAT, json=chat_body(model_name, **changes)), 400, param)


def test_missing_required_field(http):
    assert_error(http.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]}), 400)


def test_body_of_wrong_shape(http):
    assert_error(http.post(CHAT, json=[1, 2, 3]), 400)


def test_unknown_model(http):
    assert_error(http.post(CHAT, json=chat_body("no-such-model")), 404, "model", "model_not_found")
    assert_error(http.post(COMPLETIONS, json={"model": "no-such-model", "prompt": "x"}), 404, "model")


def test_prompt_over_session_len(http, model_name):
    long = "word " * (SESSION_LEN * 2)
    err = assert_error(http.post(CHAT, json=chat_body(model_name, messages=[{"role": "user", "content": long}])),
                       400, "messages", "context_length_exceeded")
    assert str(SESSION_LEN) in err["message"]
    assert_error(http.post(COMPLETIONS, json={"model": model_name, "prompt": long}), 400, "prompt",
                 "context_length_exceeded")
    # streaming requests are checked before the stream starts
    assert_error(http.post(CHAT, json=chat_body(model_name, stream=True,
                                                messages=[{"role": "user", "content": long}])), 400)


@pytest.mark.parametrize("prompt", [[], [1, "a"], [[1], ["x"]], [-1, 2], [[]], {"a": 1}])
def test_bad_completion_prompts(http, model_name, prompt):
    assert_error(http.post(COMPLETIONS, json={"model": model_name, "prompt": prompt}), 400, "prompt")


def test_token_ids_outside_the_vocabulary(http, model_name):
    assert_error(http.post(COMPLETIONS, json={"model": model_name, "prompt": [10**9], "max_tokens": 2}), 400)


def test_huge_n_times_prompts_is_rejected(http, model_name):
    body = {"model": model_name, "prompt": ["a"] * 300, "n": 2, "max_tokens": 1}
    assert_error(http.post(COMPLETIONS, json=body), 400, "n", "too_many_sequences")


def test_unknown_route_and_method(http):
    assert_error(http.get("/v1/nothing-here"), 404)
    assert_error(http.get(CHAT), 405)


def test_native_routes_reject_bad_input(http):
    assert_error(http.post("/generate", json={"max_tokens": 2}), 400, "prompt")
    assert_error(http.post("/generate", json={"prompt": "a", "input_ids": [1]}), 400, "prompt")
    assert_error(http.post("/generate", json={"input_ids": []}), 400, "input_ids")
    assert_error(http.post("/v1/encode", json={"input": 5}), 400)
    assert_error(http.post("/v1/chat/interactive", json={"prompt": "hi", "request_output_len": -3}), 400)
    assert_error(http.post("/abort_request", json={}), 400, "request_id")


def test_server_still_serves_after_bad_input(http, model_name):
    resp = http.post(CHAT, json=chat_body(model_name))
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["role"] == "assistant"
