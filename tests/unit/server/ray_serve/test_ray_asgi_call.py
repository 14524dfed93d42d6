"""Driving an ASGI app in-process: lifespan, streamed answers, and a consumer that goes away."""
from __future__ import annotations

import asyncio

import pytest
from litestar import Litestar, get
from litestar.response import Stream

from lmdeploy_sdk.server.ray.asgi_call import InProcessApp, LifespanFailed
from lmdeploy_sdk.server.ray.forward import ForwardedRequest


def make_app(events: list[str], fail_startup: bool = False) -> Litestar:
    async def startup() -> None:
        if fail_startup:
            raise RuntimeError("model not found: /nowhere")
        events.append("startup")

    async def shutdown() -> None:
        events.append("shutdown")

    @get("/count")
    async def count() -> Stream:
        async def numbers():
            try:
                for i in range(1000):
                    yield f"{i}\n"
                    await asyncio.sleep(0.01)
            finally:
                events.append("stream closed")
        return Stream(numbers(), media_type="text/plain")

    @get("/hello")
    async def hello() -> dict:
        return {"hello": "world"}

    return Litestar([count, hello], on_startup=[startup], on_shutdown=[shutdown])


def test_lifespan_and_a_whole_answer():
    async def main():
        events: list[str] = []
        app = InProcessApp(make_app(events))
        await app.start()
        messages = [m async for m in app.request(ForwardedRequest("GET", "/hello").asgi_scope(), b"")]
        await app.stop()
        return events, messages

    events, messages = asyncio.run(main())
    assert events == ["startup", "shutdown"]
    assert messages[0]["type"] == "http.response.start" and messages[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in messages[1:]) == b'{"hello":"world"}'


def test_a_consumer_that_stops_reading_ends_the_apps_stream():
    async def main():
        events: list[str] = []
        app = InProcessApp(make_app(events))
        await app.start()
        stream = app.request(ForwardedRequest("GET", "/count").asgi_scope(), b"")
        chunks = []
        async for message in stream:
            if message["type"] == "http.response.body" and message.get("body"):
                chunks.append(message["body"])
                if len(chunks) == 3:
                    break
        await stream.aclose()
        await app.stop()
        return events, chunks

    events, chunks = asyncio.run(main())
    assert chunks == [b"0\n", b"1\n", b"2\n"]
    assert "stream closed" in events  # the app saw the disconnect and stopped generating


def test_a_failed_startup_says_why():
    async def main():
        await InProcessApp(make_app([], fail_startup=True)).start()

    with pytest.raises(LifespanFailed, match="model not found: /nowhere"):
        asyncio.run(main())
