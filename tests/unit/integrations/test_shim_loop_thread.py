"""The loop thread that lets synchronous clients drive async code."""
from __future__ import annotations

import asyncio
import threading

import pytest

from lmdeploy_sdk.integrations.openai.loop_thread import LoopThread
from lmdeploy_sdk.integrations.openai.streams import AsyncChunkStream, ChunkStream


@pytest.fixture
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


async def _numbers(n: int, closed: list[bool]):
    try:
        for i in range(n):
            await asyncio.sleep(0)
            yield i
    finally:
        closed.append(True)


def test_run_returns_and_raises(loop):
    async def ok():
        return threading.current_thread().name

    async def bad():
        raise KeyError("x")

    assert loop.run(ok()) == "lmdeploy-sdk-loop"
    with pytest.raises(KeyError):
        loop.run(bad())


def test_works_while_the_caller_runs_a_loop(loop):
    async def inside_a_notebook_cell():
        async def two():
            return 2
        return loop.run(two())  # a sync client called from code that runs in a loop

    assert asyncio.run(inside_a_notebook_cell()) == 2


def test_iterate_to_the_end_and_close_early(loop):
    closed: list[bool] = []
    assert list(loop.iterate(_numbers(3, closed))) == [0, 1, 2] and closed == [True]
    closed.clear()
    source = AsyncChunkStream(_numbers(100, closed), "/chat/completions")
    stream = ChunkStream(loop.iterate(source), source.response)
    with stream:
        assert next(stream) == 0
    assert closed == [True]  # leaving the with-block closed the async source on its loop


def test_close_cancels_pending_work_and_refuses_more():
    lt = LoopThread()
    started = threading.Event()
    cancelled: list[bool] = []

    async def forever():
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    caller_saw: list[BaseException] = []

    def caller() -> None:
        try:
            lt.run(forever())
        except BaseException as e:  # noqa: BLE001 - what the blocked caller gets is the point
            caller_saw.append(e)

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    started.wait(5)
    lt.close()
    thread.join(5)
    assert cancelled == [True] and len(caller_saw) == 1  # the blocked caller was released, not left hanging
    coro = forever()
    with pytest.raises(RuntimeError, match="closed"):
        lt.run(coro)
    lt.close()  # idempotent
