"""Serving a Generation over HTTP: wait for it while watching for the client to hang up, and SSE framing.

Before a response starts, a client that disconnects cancels its request here
(Litestar does not notice by itself); once a streamed response runs, Litestar
cancels the stream on disconnect and the stream's cleanup closes the Generation.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, TypeVar

import msgspec
from litestar import Request
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from lmdeploy_sdk.messages import Response
from lmdeploy_sdk.server.context import ServerContext
from lmdeploy_sdk.server.drain import ServerDraining, draining_error
from lmdeploy_sdk.server.errors import APIError, engine_error
from lmdeploy_sdk.server.generation import Generation
from lmdeploy_sdk.server.translate import GenerationPlan

T = TypeVar("T")

SSE_DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClientDisconnected(APIError):
    def __init__(self) -> None:
        super().__init__(499, "the client closed the connection", code="client_closed_request")


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`; if the client hangs up first, cancel it and raise ClientDisconnected."""
    work = asyncio.ensure_future(awaitable)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not work.done():
            work.cancel()
        watch.cancel()
    if work.done() and not work.cancelled():
        return work.result()
    raise ClientDisconnected()


async def start_generation(
    ctx: ServerContext, request: Request, plan: GenerationPlan, api_id: str, session_id: int | None = None,
    end_session: bool = False,
) -> tuple[Generation, tuple[int, Response]]:
    """Admit and start a request, and wait for its first delta so that a request the engine
    rejects still gets a proper HTTP status (not a stream that fails at once).
    end_session: end the session when the request ends (its KV cache is freed)."""
    gen = Generation(ctx, plan, api_id, session_id, ctx.owner(request), end_session)
    try:
        first = await unless_disconnected(request, gen.next())
    except ServerDraining:
        gen.close()
        raise draining_error() from None
    except BaseException:
        gen.close()
        raise
    if first[1].finish_reason == "error":
        gen.close()
        raise engine_error(first[1].error_code, first[1].error_message)
    return gen, first


async def collect(request: Request, gen: Generation, first: tuple[int, Response]) -> list[list[Response]]:
    """Every delta of every choice (non-streamed answers); raises the first error a choice ends with."""

    async def run() -> list[list[Response]]:
        out: list[list[Response]] = [[] for _ in range(gen.num_choices)]
        event = first
        while True:
            index, resp = event
            if resp.finish_reason == "error":
                raise engine_error(resp.error_code, resp.error_message)
            out[index].append(resp)
            try:
                event = await gen.next()
            except StopAsyncIteration:
                return out

    try:
        return await unless_disconnected(request, run())
    except ServerDraining:
        raise draining_error() from None
    finally:
        gen.close()


async def events(gen: Generation, first: tuple[int, Response]) -> AsyncIterator[tuple[int, Response]]:
    """The first delta, then the rest (for streamed answers)."""
    yield first
    async for event in gen:
        yield event


def sse_event(body: Any) -> bytes:
    return b"data: " + msgspec.json.encode(body) + b"\n\n"


def sse_error(err: APIError) -> bytes:
    return sse_event(err.body())


def sse_stream(chunks: AsyncIterator[bytes], gen: Generation) -> Stream:
    """An SSE response; the Generation is closed however the stream ends (done, error, disconnect)."""
    return Stream(chunks, media_type="text/event-stream", headers=SSE_HEADERS,
                  background=BackgroundTask(gen.aclose))


def ndjson_stream(chunks: AsyncIterator[bytes], gen: Generation) -> Stream:
    """Newline-delimited JSON, as LMDeploy's /v1/chat/interactive streams."""
    return Stream(chunks, media_type="application/x-ndjson", background=BackgroundTask(gen.aclose))
