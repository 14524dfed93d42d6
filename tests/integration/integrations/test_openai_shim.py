"""Acceptance 1: the in-process shim answers exactly as the api_server does (same `openai`
types, same text, same errors), both over the same tiny engine."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

from lmdeploy_sdk.integrations.openai import AsyncOpenAI, ChunkStream, OpenAI

HELLO = [{"role": "user", "content": "Tell me about the sea."}]
VOLATILE = {"id", "created"}  # differ between any two calls


@pytest.fixture(scope="module")
def shim(tiny_pipe):
    with OpenAI(pipeline=tiny_pipe) as client:
        yield client


@pytest.fixture(scope="module")
def real(tiny_server):
    with openai.OpenAI(base_url=f"{tiny_server}/v1", api_key="unused", max_retries=0) as client:
        yield client


def _stable(obj: Any) -> Any:
    """The fields two equal answers share, logprobs compared to 1e-3: CPU matmuls differ in the
    last bits, and rounding both sides can still split a value that sits on a rounding edge."""
    return _close(obj.model_dump(exclude=VOLATILE))


class _Close(float):
    """A float equal to any float within 1e-3 of it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and abs(self - other) <= 1e-3

    __hash__ = float.__hash__


def _close(value: Any) -> Any:
    if isinstance(value, float):
        return _Close(value)
    if isinstance(value, dict):
        return {k: _close(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_close(v) for v in value]
    return value


def _both(shim, real, kind: str, **params: Any) -> tuple[Any, Any]:
    a = getattr(shim, kind).completions.create(**params) if kind == "chat" else shim.completions.create(**params)
    b = getattr(real, kind).completions.create(**params) if kind == "chat" else real.completions.create(**params)
    return a, b


def test_models_list(shim, real):
    mine, theirs = shim.models.list(), real.models.list()
    assert type(mine) is type(theirs) and len(mine.data) == 1
    assert mine.data[0].model_dump(exclude={"created"}) == theirs.data[0].model_dump(exclude={"created"})
    assert [m.id for m in shim.models.list()] == ["tiny-llama"]
    assert shim.models.retrieve("tiny-llama").id == "tiny-llama"


@pytest.mark.parametrize("params", [
    dict(temperature=0, max_tokens=12),
    dict(temperature=0, max_tokens=6, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True}),
    dict(temperature=1.0, max_tokens=6, n=2, seed=11),
])
def test_chat_equals_server(shim, real, params):
    mine, theirs = _both(shim, real, "chat", model="tiny-llama", messages=HELLO, **params)
    assert type(mine) is type(theirs) is openai.types.chat.ChatCompletion
    assert _stable(mine) == _stable(theirs)


@pytest.mark.parametrize("params", [
    dict(prompt="Once upon a time", temperature=0, max_tokens=8, echo=True),
    dict(prompt=["The sea", "A ship"], temperature=0.9, max_tokens=5, n=2, seed=3, logprobs=2),
    dict(prompt=[[1, 2, 3, 4]], temperature=0, max_tokens=5, stop=["zzz"]),
])
def test_completion_equals_server(shim, real, params):
    mine, theirs = _both(shim, real, "completions", model="tiny-llama", **params)
    assert type(mine) is type(theirs) is openai.types.Completion
    assert _stable(mine) == _stable(theirs)


def test_streamed_chat_equals_server(shim, real):
    params = dict(model="tiny-llama", messages=HELLO, temperature=0, max_tokens=10, n=2, stream=True,
                  stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    mine, theirs = _both(shim, real, "chat", **params)
    assert isinstance(mine, ChunkStream)
    mine, theirs = list(mine), list(theirs)
    assert all(type(c) is openai.types.chat.ChatCompletionChunk for c in mine)
    # Choices interleave in arrival order; per choice, the chunks must match.
    for index in (0, 1):
        assert ([_stable(c) for c in mine if c.choices and c.choices[0].index == index]
                == [_stable(c) for c in theirs if c.choices and c.choices[0].index == index])
    assert _stable(mine[-1]) == _stable(theirs[-1]) and mine[-1].usage.completion_tokens == 20


def test_streamed_completion_equals_server(shim, real):
    params = dict(model="tiny-llama", prompt=["Once upon a time", "The end"], temperature=0, max_tokens=8,
                  echo=True, stream=True, stream_options={"include_usage": True})
    mine, theirs = _both(shim, real, "completions", **params)
    mine, theirs = list(mine), list(theirs)
    for index in (0, 1):
        assert ([_stable(c) for c in mine if c.choices and c.choices[0].index == index]
                == [_stable(c) for c in theirs if c.choices and c.choices[0].index == index])
    assert _stable(mine[-1]) == _stable(theirs[-1]) and mine[-1].usage is not None
    logprobs = dict(model="tiny-llama", prompt="Once", temperature=0, max_tokens=4, logprobs=1, stream=True)
    mine, theirs = _both(shim, real, "completions", **logprobs)
    assert [_stable(c) for c in mine] == [_stable(c) for c in theirs]


@pytest.mark.parametrize("kind, params, error", [
    ("chat", dict(model="gpt-4o", messages=HELLO), openai.NotFoundError),
    ("chat", dict(model="tiny-llama", messages=HELLO, tool_choice="required"), openai.BadRequestError),
    ("chat", dict(model="tiny-llama", messages=[{"role": "user", "content": "sea " * 2000}]),
     openai.BadRequestError),
    ("chat", dict(model="tiny-llama", messages=HELLO, n=2, extra_body={"session_id": 5}), openai.BadRequestError),
    ("completions", dict(model="tiny-llama", prompt=[]), openai.BadRequestError),
    ("completions", dict(model="tiny-llama", prompt="x", presence_penalty=0.5), openai.BadRequestError),
])
def test_errors_equal_server(shim, real, kind, params, error):
    with pytest.raises(error) as mine:
        _both(shim, real, kind, **params)  # the shim call comes first and must raise
    with pytest.raises(error) as theirs:
        (real.chat.completions if kind == "chat" else real.completions).create(**params)
    assert mine.value.body == theirs.value.body and str(mine.value) == str(theirs.value)


@pytest.mark.parametrize("params", [
    dict(max_tokens=-1), dict(max_tokens="3"), dict(temperature=True), dict(n=1.5),
    dict(messages=[{"role": "robot", "content": "x"}]), dict(messages=[]),
    dict(stream_options={"include_usage": "yes"}),
])
def test_invalid_fields_are_bad_requests_like_the_server(shim, real, params):
    """Same class, status, type, code and field; the server words some of these messages
    through its web framework's lax validation pass."""
    body = {"model": "tiny-llama", "messages": HELLO, **params}
    with pytest.raises(openai.BadRequestError) as mine:
        shim.chat.completions.create(**body)
    with pytest.raises(openai.BadRequestError) as theirs:
        real.chat.completions.create(**body)
    a, b = mine.value.body, theirs.value.body
    assert (a["type"], a["code"]) == (b["type"], b["code"]) == ("invalid_request_error", "invalid_request")
    assert a["param"] == b["param"].split("[")[0].split(".")[0]


def _settled(engine, timeout_s: float = 5.0):
    """Engine stats once aborts / session ends (applied by the engine thread at its next step) are done."""
    deadline = time.monotonic() + timeout_s
    stats = engine.stats()
    while (stats.running or stats.blocks_free != stats.blocks_total) and time.monotonic() < deadline:
        time.sleep(0.01)
        stats = engine.stats()
    return stats


def test_session_reuses_kv_across_turns(shim, tiny_pipe):
    turn = dict(model="tiny-llama", temperature=0, max_tokens=4, extra_body={"session_id": 77})
    first = shim.chat.completions.create(messages=HELLO, **turn)
    history = HELLO + [first.choices[0].message, {"role": "user", "content": "More."}]
    second = shim.chat.completions.create(messages=history, **turn)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens
    shim.end_session(77)
    stats = _settled(tiny_pipe.async_engine)
    assert stats.blocks_free == stats.blocks_total


def test_end_session_field_ends_it_after_the_request(shim, tiny_pipe):
    """The server's `end_session` extension works in-process too."""
    turn = dict(model="tiny-llama", messages=HELLO, temperature=0, max_tokens=2)
    shim.chat.completions.create(**turn, extra_body={"session_id": 78})
    assert tiny_pipe.async_engine.stats().sessions >= 1
    shim.chat.completions.create(**turn, extra_body={"session_id": 78, "end_session": True})
    stats = _settled(tiny_pipe.async_engine)
    assert stats.blocks_free == stats.blocks_total and stats.sessions == 0


def test_closing_a_stream_early_frees_the_engine(shim, tiny_pipe):
    stream = shim.chat.completions.create(model="tiny-llama", messages=HELLO, max_tokens=500, stream=True,
                                          extra_body={"ignore_eos": True})
    with stream:
        next(stream)
        next(stream)
    stats = _settled(tiny_pipe.async_engine)
    assert stats.running == 0 and stats.blocks_free == stats.blocks_total


def test_async_client_concurrent_requests_equal_sync(tiny_pipe, shim):
    prompts = [f"Story number {i}:" for i in range(4)]

    async def main() -> list[str]:
        async with AsyncOpenAI(pipeline=tiny_pipe) as client:
            answers = await asyncio.gather(*(
                client.completions.create(model="tiny-llama", prompt=p, temperature=0, max_tokens=6)
                for p in prompts
            ))
            stream = await client.chat.completions.create(model="tiny-llama", messages=HELLO, temperature=0,
                                                          max_tokens=6, stream=True)
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert [m.id async for m in client.models.list()] == [(await client.models.list()).data[0].id]
            return [a.choices[0].text for a in answers] + [streamed]

    texts = asyncio.run(main())
    expected = [shim.completions.create(model="tiny-llama", prompt=p, temperature=0, max_tokens=6).choices[0].text
                for p in prompts]
    chat = shim.chat.completions.create(model="tiny-llama", messages=HELLO, temperature=0, max_tokens=6)
    assert texts == expected + [chat.choices[0].message.content]


def test_constructor_checks(tiny_pipe):
    with pytest.raises(ValueError, match="backend_config"):
        OpenAI(pipeline=tiny_pipe, backend_config=tiny_pipe.backend_config)
    with pytest.raises(TypeError, match="organisation"):
        OpenAI(pipeline=tiny_pipe, organisation="typo")
    with pytest.raises(TypeError, match="Pipeline"):
        OpenAI(pipeline="not a pipeline")
