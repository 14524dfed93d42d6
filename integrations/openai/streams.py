"""Iterators of streamed chunks with the surface of `openai.Stream` / `openai.AsyncStream`.

Closing one (or leaving a `with` block, or breaking out of iteration and
closing) stops the generation; the engine frees its KV cache. `.response` is the
(in-process) HTTP response the real client's streams carry.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar

from lmdeploy_sdk.integrations.openai.api_errors import http, request_at
from lmdeploy_sdk.integrations.openai.client_options import within

T = TypeVar("T")


def stream_response(path: str) -> Any:
    """The response a stream from `path` says it reads (status 200, server-sent events)."""
    return http.Response(200, headers={"content-type": "text/event-stream"}, request=request_at(path))


class AsyncChunkStream(Generic[T]):
    """`async for chunk in stream`; `await stream.close()` stops early (as openai.AsyncStream).
    A wait for the next chunk longer than `seconds` aborts the stream with APITimeoutError."""

    def __init__(self, chunks: AsyncGenerator[T, None], path: str, seconds: float | None = None) -> None:
        self._chunks = chunks
        self._path = path
        self._seconds = seconds
        self.response = stream_response(path)

    def __aiter__(self) -> AsyncChunkStream[T]:
        return self

    async def __anext__(self) -> T:
        return await within(self._chunks.__anext__(), self._seconds, self._path)

    async def close(self) -> None:
        await self._chunks.aclose()

    async def __aenter__(self) -> AsyncChunkStream[T]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class ChunkStream(Generic[T]):
    """`for chunk in stream`; `stream.close()` stops early (as openai.Stream)."""

    def __init__(self, chunks: Generator[T, None, None], response: Any) -> None:
        self._chunks = chunks
        self.response = response

    def __iter__(self) -> ChunkStream[T]:
        return self

    def __next__(self) -> T:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def __enter__(self) -> ChunkStream[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
