"""Acceptance 2: 64 concurrent streaming clients, a quarter hanging up mid-stream."""
from __future__ import annotations

import asyncio
import time

import httpx
import openai

CLIENTS = 64
MAX_TOKENS = 16


def wait_for_idle(server, idle_blocks: float, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        used = server.metric("lmdeploy_sdk_kv_blocks_used")
        running = server.metric("lmdeploy_sdk_running_sequences")
        waiting = server.metric("lmdeploy_sdk_waiting_sequences")
        if used == idle_blocks and running == 0 and waiting == 0:
            return
        assert time.monotonic() < deadline, f"not idle: blocks used {used} (idle {idle_blocks}), " \
                                            f"running {running}, waiting {waiting}"
        time.sleep(0.1)


async def _one_client(aclient: openai.AsyncOpenAI, model: str, i: int, hang_up: bool) -> dict:
    stream = await aclient.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"Client {i} says hello."}], max_tokens=MAX_TOKENS,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        if hang_up and len(chunks) == 3:
            await stream.close()  # drop the connection mid-stream
            return {"hung_up": True, "chunks": chunks}
    return {"hung_up": False, "chunks": chunks}


def _check_complete(chunks) -> None:
    assert chunks[0].choices[0].delta.role == "assistant"
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    content_chunks = [c for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in content_chunks if c.choices[0].finish_reason]
    assert finishes == ["length"], finishes
    assert content_chunks[-1].choices[0].finish_reason == "length"  # nothing after the finish
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == MAX_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + MAX_TOKENS
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text


def test_64_streams_with_disconnects(server, model_name):
    idle_blocks = server.metric("lmdeploy_sdk_kv_blocks_used")
    hangers = set(range(0, CLIENTS, 4))  # a quarter of them

    async def run():
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0,
                                      timeout=120) as aclient:
            return await asyncio.gather(*(
                _one_client(aclient, model_name, i, i in hangers) for i in range(CLIENTS)
            ))

    results = asyncio.run(run())
    assert sum(r["hung_up"] for r in results) == len(hangers)
    for r in results:
        if not r["hung_up"]:
            _check_complete(r["chunks"])
    assert httpx.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
    wait_for_idle(server, idle_blocks)


LONG = 200  # tokens: far more than a client waits for below


def _long_body(model_name: str, stream: bool) -> dict:
    return {"model": model_name, "messages": [{"role": "user", "content": "go"}], "max_tokens": LONG,
            "ignore_eos": True, "stream": stream}


def test_non_streaming_disconnect_aborts_the_request(server, model_name):
    """A client that gives up on a long non-streamed answer stops its generation."""
    idle_blocks = server.metric("lmdeploy_sdk_kv_blocks_used")
    generated = server.metric("lmdeploy_sdk_generation_tokens_total")
    try:
        httpx.post(f"{server.url}/v1/chat/completions", json=_long_body(model_name, False), timeout=0.3)
    except httpx.TimeoutException:
        pass
    else:
        raise AssertionError(f"expected a {LONG}-token answer to outlast a 0.3 s timeout")
    wait_for_idle(server, idle_blocks)
    assert server.metric("lmdeploy_sdk_generation_tokens_total") - generated < LONG


def test_streaming_disconnect_aborts_the_request(server, model_name):
    idle_blocks = server.metric("lmdeploy_sdk_kv_blocks_used")
    generated = server.metric("lmdeploy_sdk_generation_tokens_total")
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=_long_body(model_name, True),
                      timeout=30) as resp:
        events = 0
        for line in resp.iter_lines():
            events += line.startswith("data:")
            if events == 3:
                break  # leaving the block closes the connection mid-stream
    wait_for_idle(server, idle_blocks)
    assert server.metric("lmdeploy_sdk_generation_tokens_total") - generated < LONG
