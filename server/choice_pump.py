"""One choice of a request run on the engine, its deltas put on the request's queue.

Shared by the server's `Generation` and the shim's `ChoiceRun`, which merge the
deltas of all choices in arrival order; kept free of the web framework.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from lmdeploy_sdk.errors import ErrorCode
from lmdeploy_sdk.messages import Response
from lmdeploy_sdk.server.translate import GenerationPlan

if TYPE_CHECKING:
    from lmdeploy_sdk.async_engine import AsyncEngine


async def pump_choice(
    engine: AsyncEngine, plan: GenerationPlan, index: int, request_id: str, session_id: int | None,
    queue: asyncio.Queue[Any], log: logging.Logger,
) -> None:
    """Queue (index, delta) for each delta; an engine that raises ends the choice with an error delta,
    so the consumer still sees every choice finish."""
    prompt = plan.prompts[plan.prompt_of_choice[index]]
    try:
        spans = plan.spans[plan.prompt_of_choice[index]] if plan.spans else None
        async for resp in engine.generate(prompt, plan.configs[index], session_id=session_id, request_id=request_id,
                                          embedding_spans=spans):
            queue.put_nowait((index, resp))
    except asyncio.CancelledError:
        raise
    except Exception as e:  # the engine raised instead of answering with an error Response
        log.error("generation %s failed", request_id, exc_info=e)
        queue.put_nowait((index, Response(
            finish_reason="error", error_code=int(ErrorCode.ENGINE_ERROR), error_message=f"engine error: {e}",
        )))
