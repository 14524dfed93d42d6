"""An asyncio event loop in a daemon thread, so synchronous callers can drive the async engine API.

A private loop (rather than asyncio.run per call) keeps working where the caller's
thread already runs a loop, as in a Jupyter notebook, and lets several threads
(e.g. LangChain's batch) share one client: their requests batch in the engine.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


async def _next(items: AsyncIterator[T]) -> T:
    return await items.__anext__()


async def _cancel_running() -> None:
    """Cancel every other task on this loop and let them unwind (aborting their engine requests)."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class LoopThread:
    def __init__(self, name: str = "lmdeploy-sdk-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run coro on the loop and wait for its result; an interrupt (Ctrl-C) cancels it."""
        if self._closed:
            coro.close()
            raise RuntimeError("this client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a synchronous client cannot be called from its own event loop; use the async one")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def iterate(self, items: AsyncIterator[T]) -> Generator[T, None, None]:
        """Items of an async iterator, one loop round-trip each; closing the generator closes the source."""
        try:
            while True:
                try:
                    yield self.run(_next(items))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(items, "aclose", None) or getattr(items, "close", None)
            if aclose is not None and not self._closed:
                if threading.current_thread() is self._thread:  # dropped by code running on the loop
                    self._loop.create_task(aclose())
                else:
                    self.run(aclose())

    def close(self) -> None:
        """Stop the loop and its thread (idempotent)."""
        if self._closed:
            return
        asyncio.run_coroutine_threadsafe(_cancel_running(), self._loop).result()
        asyncio.run_coroutine_threadsafe(self._loop.shutdown_asyncgens(), self._loop).result()
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
