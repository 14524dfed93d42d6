"""Bodies written for LMDeploy's server work unchanged (issue 18): a tutorial's Swagger
example sends `messages` as a plain string, `"stop": false`, `"renew_session": false` and
`"user": "string"`; each means what it meant there."""
from __future__ import annotations

import httpx
import pytest

from lmdeploy_sdk import GenerationConfig, pipeline

GREEDY = GenerationConfig(max_new_tokens=8, do_sample=False)


@pytest.fixture(scope="module")
def pipe(tiny_llama):
    with pipeline(str(tiny_llama)) as p:
        yield p


def _chat(server, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)


def test_tutorial_body_is_one_user_turn(server, pipe, model_name):
    expected = pipe([{"role": "user", "content": "写一首春天的诗"}], gen_config=GREEDY)
    r = _chat(server, {"model": model_name, "messages": "写一首春天的诗", "temperature": 0, "max_tokens": 8,
                       "stop": False, "renew_session": False, "user": "string", "stream": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == expected.text
    assert body["usage"]["prompt_tokens"] == expected.input_token_len


@pytest.mark.parametrize("stop", [False, True])
def test_boolean_stop_means_no_stop_strings(server, pipe, model_name, stop):
    expected = pipe([{"role": "user", "content": "hello"}], gen_config=GREEDY)
    r = _chat(server, {"model": model_name, "messages": [{"role": "user", "content": "hello"}],
                       "temperature": 0, "max_tokens": 8, "stop": stop})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == expected.text


def test_other_types_are_still_rejected(server, model_name):
    r = _chat(server, {"model": model_name, "messages": 5})
    assert r.status_code == 400 and "messages" in r.text
    r = _chat(server, {"model": model_name, "messages": [], "stop": False})
    assert r.status_code == 400
