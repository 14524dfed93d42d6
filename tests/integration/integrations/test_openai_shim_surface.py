"""The in-process `openai` shim has the real client's surface that ported code uses (issue
18): the connection settings as attributes, `with_options`/`copy`, `timeout=` that raises
`openai.APITimeoutError` (it was ignored: a 0.01 s timeout still ran to the end),
`client.embeddings` failing as the real client does on our server (404), and streams with
`.response` that close from a `with` block."""
from __future__ import annotations

import time

import openai
import pytest

from lmdeploy_sdk.integrations.openai import AsyncOpenAI, OpenAI

LONG = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture
def client(tiny_pipe):
    c = OpenAI(pipeline=tiny_pipe, api_key="key-1", timeout=30.0, max_retries=5)
    yield c
    c.close()


def _idle(pipe) -> bool:
    """No request left running or waiting in the engine (a timed-out one was aborted)."""
    for _ in range(200):
        stats = pipe.async_engine.stats()
        if stats.running == 0 and stats.waiting == 0:
            return True
        time.sleep(0.05)
    return False


def test_settings_read_like_the_real_clients(client):
    real = openai.OpenAI(api_key="key-1", base_url="http://127.0.0.1:1/v1", timeout=30.0, max_retries=5)
    for name in ("api_key", "timeout", "max_retries", "organization", "project"):
        assert getattr(client, name) == getattr(real, name), name
    assert str(client.base_url).endswith("/v1/")
    changed = client.with_options(timeout=3.0, max_retries=0)
    assert (changed.timeout, changed.max_retries, changed.api_key) == (3.0, 0, "key-1")
    assert client.timeout == 30.0  # the original is unchanged
    assert client.copy(api_key="key-2").api_key == "key-2"


@pytest.mark.parametrize("stream", [False, True])
def test_timeout_raises_api_timeout_error_and_aborts(client, tiny_pipe, stream):
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        out = client.chat.completions.create(model=client.model_name, messages=LONG, max_tokens=900,
                                             ignore_eos=True, stream=stream, timeout=0.01)
        for _ in out:  # a stream times out waiting for a chunk
            pass
    assert time.monotonic() - start < 5
    assert _idle(tiny_pipe)
    fast = client.with_options(timeout=0.01)
    with pytest.raises(openai.APITimeoutError):
        fast.completions.create(model=client.model_name, prompt="Once upon a time", max_tokens=900, ignore_eos=True)
    fast.close()  # leaves the engine and the loop to `client`
    ok = client.chat.completions.create(model=client.model_name, messages=LONG, max_tokens=3)
    assert ok.choices[0].message.content is not None


def test_embeddings_is_the_servers_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model=client.model_name, input="hello")
    assert e.value.status_code == 404


def test_stream_has_response_and_closes_from_with(client, tiny_pipe):
    stream = client.chat.completions.create(model=client.model_name, messages=LONG, max_tokens=900,
                                            ignore_eos=True, stream=True)
    assert stream.response.status_code == 200
    assert stream.response.headers["content-type"] == "text/event-stream"
    with stream:
        next(iter(stream))
    assert _idle(tiny_pipe)


@pytest.mark.anyio
async def test_async_client_timeout_and_options(tiny_pipe):
    client = AsyncOpenAI(pipeline=tiny_pipe).with_options(timeout=0.01)
    assert client.timeout == 0.01 and client.max_retries == openai.DEFAULT_MAX_RETRIES
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model=client.model_name, messages=LONG, max_tokens=900,
                                             ignore_eos=True)
    stream = await client.chat.completions.create(model=client.model_name, messages=LONG, max_tokens=3,
                                                  stream=True, timeout=60)
    assert stream.response.status_code == 200
    assert [c async for c in stream]
    await client.close()
    assert _idle(tiny_pipe)
