"""The shim's transport around the server's body builders (`lmdeploy_sdk.server.openai_bodies`).

Bodies and chunks are built by the same code as the server's routes; here only
what differs in-process: errors become the `openai` package's exceptions and
the engine run is closed when the answer is done.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

from lmdeploy_sdk.integrations.openai.api_errors import engine_status_error, stream_error
from lmdeploy_sdk.integrations.openai.choice_run import ChoiceRun
from lmdeploy_sdk.server.assemble import ChoiceAccumulator
from lmdeploy_sdk.server.openai_bodies import ChoiceFailed, Event

T = TypeVar("T")


async def collect(run: ChoiceRun, first: Event, path: str) -> list[ChoiceAccumulator]:
    """Every choice's output (non-streamed answers); raises the first error a choice ends with."""
    accs = [ChoiceAccumulator() for _ in range(run.num_choices)]
    event = first
    try:
        while True:
            index, resp = event
            if resp.finish_reason == "error":
                raise engine_status_error(resp.error_code, resp.error_message, path)
            accs[index].add(resp)
            try:
                event = await run.__anext__()
            except StopAsyncIteration:
                return accs
    finally:
        run.close()


async def events(run: ChoiceRun, first: Event) -> AsyncIterator[Event]:
    """The first (already awaited) event, then the rest of the run."""
    yield first
    async for event in run:
        yield event


async def run_chunks(chunks: AsyncGenerator[T, None], run: ChoiceRun, path: str) -> AsyncGenerator[T, None]:
    """Chunks as `openai`'s Stream yields them: a failed choice raises its mid-stream error; closing stops the run."""
    try:
        async for chunk in chunks:
            yield chunk
    except ChoiceFailed as e:
        raise stream_error(e.error_code, e.error_message, path) from None
    finally:
        run.close()
        await chunks.aclose()
