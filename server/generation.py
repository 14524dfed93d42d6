"""Run one admitted API request on the engine: its choices in parallel, their deltas merged in arrival order.

A `Generation` holds an admission slot per choice, and its session (if any), from
construction until `close()`, which aborts whatever is still running (the engine
frees its KV) and releases the session, or ends it when asked to.
Routes must close it on every path; closing is synchronous and idempotent so
it also works inside a cancelled task.
"""
from __future__ import annotations

import asyncio
import logging
import time

from lmdeploy_sdk.messages import Response
from lmdeploy_sdk.server.choice_pump import pump_choice
from lmdeploy_sdk.server.context import ServerContext
from lmdeploy_sdk.server.drain import ServerDraining
from lmdeploy_sdk.server.errors import APIError
from lmdeploy_sdk.server.translate import GenerationPlan

log = logging.getLogger("lmdeploy_sdk.server")

_STOP = object()  # queued by the drain controller: the server is ending this request


class Generation:
    def __init__(
        self,
        ctx: ServerContext,
        plan: GenerationPlan,
        api_id: str,
        session_id: int | None = None,
        owner: str | None = None,
        end_session: bool = False,
    ) -> None:
        if session_id is not None and plan.num_choices > 1:
            raise APIError(400, "a request on a session_id must have exactly one choice (n=1, one prompt)",
                           param="session_id", code="invalid_request")
        ctx.drain.check_accepting()
        engine = ctx.engine
        ctx.limiter.acquire(plan.num_choices)
        if session_id is not None:
            try:
                ctx.open_session(session_id, owner)
            except APIError:
                ctx.limiter.release(plan.num_choices)
                raise
        self._ctx = ctx
        self._plan = plan
        self._api_id = api_id
        self._session_id = session_id
        self._end_session = end_session
        self._queue: asyncio.Queue = asyncio.Queue()
        self._remaining = plan.num_choices
        self._closed = False
        self._start = time.perf_counter()
        self._last_token_at: list[float | None] = [None] * plan.num_choices
        engine_ids = [f"{api_id}-{i}" for i in range(plan.num_choices)]
        ctx.inflight.add(api_id, engine_ids, session_id, owner)
        ctx.drain.register(self._stop)
        self._tasks = [
            asyncio.ensure_future(pump_choice(engine, plan, i, rid, session_id, self._queue, log))
            for i, rid in enumerate(engine_ids)
        ]

    def _stop(self) -> None:
        self._queue.put_nowait(_STOP)

    def _observe(self, index: int, resp: Response) -> None:
        now = time.perf_counter()
        metrics = self._ctx.metrics
        if resp.token_ids:
            last = self._last_token_at[index]
            if last is None:
                metrics.ttft.observe(now - self._start)
            else:
                metrics.itl.observe((now - last) / len(resp.token_ids))
            self._last_token_at[index] = now
        if resp.finish_reason is not None and resp.finish_reason != "error":
            metrics.e2e.observe(now - self._start)

    async def next(self) -> tuple[int, Response]:
        """The next (choice index, delta). StopAsyncIteration after every choice finished;
        ServerDraining when the server ends the request during shutdown."""
        if self._remaining == 0:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _STOP:
            raise ServerDraining()
        index, resp = item
        self._observe(index, resp)
        if resp.finish_reason is not None:
            self._remaining -= 1
        return index, resp

    def __aiter__(self) -> "Generation":
        return self

    async def __anext__(self) -> tuple[int, Response]:
        return await self.next()

    @property
    def num_choices(self) -> int:
        return self._plan.num_choices

    def close(self) -> None:
        """Abort unfinished choices, give back the admission slots, release (or end) the session."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()  # the engine's generate() aborts the request as it unwinds
        self._ctx.drain.unregister(self._stop)
        self._ctx.inflight.remove(self._api_id, self._session_id)
        self._ctx.limiter.release(self._plan.num_choices)
        if self._session_id is not None:
            self._ctx.release_session(self._session_id, self._end_session)

    async def aclose(self) -> None:
        self.close()
