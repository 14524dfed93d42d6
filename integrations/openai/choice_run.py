"""Run the choices of one request on the engine at once, their deltas merged in arrival order.

`close()` cancels whatever still runs; the engine's generate() aborts those
requests as it unwinds and frees their KV cache. With `end_session`, close()
also ends the request's session.
"""
from __future__ import annotations

import asyncio
import logging

from lmdeploy_sdk.async_engine import AsyncEngine
from lmdeploy_sdk.messages import Response
from lmdeploy_sdk.server.choice_pump import pump_choice
from lmdeploy_sdk.server.translate import GenerationPlan, InvalidRequest

log = logging.getLogger("lmdeploy_sdk.integrations")


class ChoiceRun:
    def __init__(
        self, engine: AsyncEngine, plan: GenerationPlan, api_id: str, session_id: int | None,
        end_session: bool = False,
    ) -> None:
        if session_id is not None and plan.num_choices > 1:
            raise InvalidRequest("a request on a session_id must have exactly one choice (n=1, one prompt)",
                                 "session_id", "invalid_request")
        self._plan = plan
        self._engine = engine
        self._session_to_end = session_id if end_session else None
        self._queue: asyncio.Queue[tuple[int, Response]] = asyncio.Queue()
        self._remaining = plan.num_choices
        self._tasks = [
            asyncio.ensure_future(pump_choice(engine, plan, i, f"{api_id}-{i}", session_id, self._queue, log))
            for i in range(plan.num_choices)
        ]

    @property
    def num_choices(self) -> int:
        return self._plan.num_choices

    def __aiter__(self) -> ChoiceRun:
        return self

    async def __anext__(self) -> tuple[int, Response]:
        """The next (choice index, delta); StopAsyncIteration once every choice has finished."""
        if self._remaining == 0:
            raise StopAsyncIteration
        index, resp = await self._queue.get()
        if resp.finish_reason is not None:
            self._remaining -= 1
        return index, resp

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._session_to_end is not None:
            self._engine.end_session_nowait(self._session_to_end)
            self._session_to_end = None
