"""Acceptance 1: the real `openai` client (sync and async) against a real server."""
from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from lmdeploy_sdk import GenerationConfig, pipeline

MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]
GREEDY = GenerationConfig(max_new_tokens=12, do_sample=False)


@pytest.fixture(scope="module")
def pipe(tiny_llama):
    with pipeline(str(tiny_llama)) as p:
        yield p


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models_list(client, model_name):
    models = client.models.list()
    assert [m.id for m in models.data] == [model_name]


def test_greedy_chat_equals_pipeline(client, pipe, model_name):
    expected = pipe(MESSAGES, gen_config=GREEDY)
    resp = client.chat.completions.create(model=model_name, messages=MESSAGES, temperature=0, max_tokens=12)
    choice = resp.choices[0]
    assert choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert resp.usage.prompt_tokens == expected.input_token_len
    assert resp.usage.completion_tokens == expected.generate_token_len
    assert resp.usage.total_tokens == expected.input_token_len + expected.generate_token_len


def test_greedy_completion_equals_pipeline(client, pipe, model_name):
    prompt = "The capital of France is"
    expected = pipe(prompt, gen_config=GREEDY, do_preprocess=False)
    resp = client.completions.create(model=model_name, prompt=prompt, temperature=0, max_tokens=12)
    assert resp.choices[0].text == expected.text
    assert resp.usage.prompt_tokens == expected.input_token_len


def test_streaming_chat_with_usage(client, pipe, model_name):
    expected = pipe(MESSAGES, gen_config=GREEDY)
    stream = client.chat.completions.create(
        model=model_name, messages=MESSAGES, temperature=0, max_tokens=12, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [expected.finish_reason]
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    assert usage_chunks[0].usage.completion_tokens == expected.generate_token_len


def test_streaming_completion(client, model_name):
    stream = client.completions.create(model=model_name, prompt="Once upon a time", max_tokens=8, stream=True,
                                       temperature=0, extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "length"
    full = client.completions.create(model=model_name, prompt="Once upon a time", max_tokens=8, temperature=0,
                                     extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].text for c in chunks) == full.choices[0].text


def test_max_tokens_bounds_the_answer(client, model_name):
    resp = client.chat.completions.create(model=model_name, messages=MESSAGES, max_tokens=3,
                                          extra_body={"ignore_eos": True})
    assert resp.usage.completion_tokens == 3
    assert resp.choices[0].finish_reason == "length"
    resp = client.chat.completions.create(model=model_name, messages=MESSAGES, max_completion_tokens=2,
                                          extra_body={"ignore_eos": True})
    assert resp.usage.completion_tokens == 2


def test_stop_string_ends_the_answer(client, model_name):
    full = client.completions.create(model=model_name, prompt="One two three", max_tokens=12, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = full[len(full) // 2:][:3]
    assert stop.strip(), f"need a non-blank stop string from {full!r}"
    cut = client.completions.create(model=model_name, prompt="One two three", max_tokens=12, temperature=0,
                                    stop=[stop], extra_body={"ignore_eos": True}).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)]


def test_n_choices_and_seed(client, model_name):
    kwargs = dict(model=model_name, messages=MESSAGES, max_tokens=10, temperature=1.0, n=2, seed=1234,
                  extra_body={"top_k": 0, "ignore_eos": True})
    first = client.chat.completions.create(**kwargs)
    again = client.chat.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1]
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices]  # same seed, same answers
    assert texts[0] != texts[1]  # each choice has its own seed
    assert first.usage.completion_tokens == 20
    other = client.chat.completions.create(**{**kwargs, "seed": 99})
    assert [c.message.content for c in other.choices] != texts


def test_streaming_n_choices_are_complete(client, model_name):
    stream = client.chat.completions.create(model=model_name, messages=MESSAGES, max_tokens=6, n=2, stream=True,
                                            temperature=0, extra_body={"ignore_eos": True})
    texts, finishes = {0: "", 1: ""}, {}
    for c in stream:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    assert finishes == {0: "length", 1: "length"}
    assert texts[0] == texts[1] != ""  # greedy: both choices agree


def test_chat_logprobs(client, model_name):
    resp = client.chat.completions.create(model=model_name, messages=MESSAGES, max_tokens=5, temperature=0,
                                          logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = resp.choices[0].logprobs.content
    assert len(content) == 5
    assert "".join(t.token for t in content) == resp.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3
        assert t.logprob <= 0
        # greedy: the chosen token is the most likely one
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert [x.logprob for x in t.top_logprobs] == sorted((x.logprob for x in t.top_logprobs), reverse=True)


def test_completion_logprobs(client, model_name):
    resp = client.completions.create(model=model_name, prompt="Hello", max_tokens=4, temperature=0, logprobs=2,
                                     extra_body={"ignore_eos": True})
    lp = resp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert all(len(t) == 2 for t in lp.top_logprobs)
    assert lp.text_offset[0] == 0


def test_async_client(server, model_name, pipe):
    expected = pipe(MESSAGES, gen_config=GREEDY)

    async def run():
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as aclient:
            models = await aclient.models.list()
            resp = await aclient.chat.completions.create(model=model_name, messages=MESSAGES, temperature=0,
                                                         max_tokens=12)
            stream = await aclient.chat.completions.create(model=model_name, messages=MESSAGES, temperature=0,
                                                           max_tokens=12, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            comp = await aclient.completions.create(model=model_name, prompt="Hi", max_tokens=3)
            return models, resp, text, comp

    models, resp, text, comp = asyncio.run(run())
    assert models.data[0].id == model_name
    assert resp.choices[0].message.content == text == expected.text
    assert comp.usage.completion_tokens <= 3


def test_session_id_reuses_the_kv_cache(client, model_name):
    first = client.chat.completions.create(model=model_name, messages=MESSAGES, max_tokens=4, temperature=0,
                                           extra_body={"session_id": 4242})
    follow_up = MESSAGES + [{"role": "assistant", "content": first.choices[0].message.content},
                            {"role": "user", "content": "And then?"}]
    second = client.chat.completions.create(model=model_name, messages=follow_up, max_tokens=4, temperature=0,
                                            extra_body={"session_id": 4242})
    assert second.usage.prompt_tokens_details.cached_tokens > 0
    # end the session (frees its KV): an empty interactive turn with interactive_mode off
    httpx.post(f"{client.base_url}chat/interactive", json={"session_id": 4242}, timeout=30).raise_for_status()


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def test_tools_accepted_and_plain_answers_pass_through(client, model_name):
    """The tiny model never calls a tool: its text must come through unchanged, streamed or not."""
    kwargs = dict(model=model_name, messages=MESSAGES, temperature=0, max_tokens=12, tools=[WEATHER_TOOL])
    full = client.chat.completions.create(**kwargs)
    assert full.choices[0].message.tool_calls is None
    assert full.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(**kwargs, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == full.choices[0].message.content
