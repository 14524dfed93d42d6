"""Iterators of streamed chunks with the surface of `openai.Stream` / `openai.AsyncStream`.

Closing one (or leaving a `with` block, or breaking out of iteration and
closing) stops the generation; the engine frees its KV cache.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class AsyncChunkStream(Generic[T]):
    """`async for chunk in stream`; `await stream.close()` stops early (as openai.AsyncStream)."""

    def __init__(self, chunks: AsyncGenerator[T, None]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> AsyncChunkStream[T]:
        return self

    async def __anext__(self) -> T:
        return await self._chunks.__anext__()

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

    def __init__(self, chunks: Generator[T, None, None]) -> None:
        self._chunks = chunks

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
