"""The server's OpenAI routes as coroutines over an in-process engine, answering with `openai` types.

Requests are translated by the server's own `translate` module and answers are
built from the server's body structs, then turned into the `openai` package's
types the way its client does with the server's JSON (`construct`, no
re-validation), so both paths give the same objects.
"""
from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from lmdeploy_sdk.async_engine import AsyncEngine
from lmdeploy_sdk.integrations.openai.api_errors import engine_status_error, invalid_request_error, status_error
from lmdeploy_sdk.integrations.openai.bodies import collect, events, run_chunks
from lmdeploy_sdk.integrations.openai.choice_run import ChoiceRun
from lmdeploy_sdk.integrations.openai.client_options import within
from lmdeploy_sdk.integrations.openai.request_body import parse_request
from lmdeploy_sdk.integrations.openai.streams import AsyncChunkStream
from lmdeploy_sdk.server.openai_bodies import (
    Event,
    chat_chunks,
    chat_response,
    completion_chunks,
    completion_response,
    echo_texts,
    serves_model,
)
from lmdeploy_sdk.server.schemas.chat import ChatCompletionRequest
from lmdeploy_sdk.server.schemas.completions import CompletionRequest, ModelCard
from lmdeploy_sdk.server.translate import GenerationPlan, InvalidRequest, chat_plan, completion_plan

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"


def _as_openai(body: msgspec.Struct, openai_type: Any) -> Any:
    return openai_type.construct(**msgspec.to_builtins(body))


async def _as_openai_chunks(
    chunks: AsyncGenerator[msgspec.Struct, None], openai_type: Any
) -> AsyncGenerator[Any, None]:
    try:
        async for chunk in chunks:
            yield _as_openai(chunk, openai_type)
    finally:
        await chunks.aclose()


class InProcessAPI:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def models(self) -> list[Model]:
        engine = self.engine
        card = ModelCard(id=engine.model_name, created=int(time.time()), root=engine.model_name,
                         max_model_len=engine.session_len)
        return [_as_openai(card, Model)]

    def _check_model(self, model: str, path: str) -> None:
        served = self.engine.model_name
        if not serves_model(served, model):
            raise status_error(404, f"model {model!r} does not exist; this server serves {served!r}",
                               path, param="model", code="model_not_found")

    async def _start(self, plan: GenerationPlan, api_id: str, req: Any, path: str) -> tuple[ChoiceRun, Event]:
        """Start every choice and wait for the first delta, so a request the engine rejects
        raises its status error here rather than failing a stream at once."""
        try:
            run = ChoiceRun(self.engine, plan, api_id, req.session_id, req.end_session)
        except InvalidRequest as e:
            raise invalid_request_error(e, path) from None
        try:
            first = await run.__anext__()
        except BaseException:
            run.close()
            raise
        if first[1].finish_reason == "error":
            run.close()
            raise engine_status_error(first[1].error_code, first[1].error_message, path)
        return run, first

    def _plan(self, make_plan: Any, req: Any, path: str) -> GenerationPlan:
        try:
            return make_plan(req, self.engine.tokenizer, self.engine.session_len)
        except InvalidRequest as e:
            raise invalid_request_error(e, path) from None

    async def chat_completions(
        self, params: dict[str, Any], seconds: float | None = None
    ) -> ChatCompletion | AsyncChunkStream[ChatCompletionChunk]:
        """`seconds`: the time limit (a stream's: for each chunk); None waits as long as it takes."""
        req = parse_request(params, ChatCompletionRequest, CHAT_PATH)
        self._check_model(req.model, CHAT_PATH)
        plan = self._plan(functools.partial(chat_plan, vision=self.engine.vision), req, CHAT_PATH)
        api_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        tokenizer = self.engine.tokenizer
        if not req.stream:
            async def answer() -> ChatCompletion:
                run, first = await self._start(plan, api_id, req, CHAT_PATH)
                accs = await collect(run, first, CHAT_PATH)
                return _as_openai(chat_response(req, plan, accs, api_id, created, tokenizer), ChatCompletion)

            return await within(answer(), seconds, CHAT_PATH)
        run, first = await within(self._start(plan, api_id, req, CHAT_PATH), seconds, CHAT_PATH)
        chunks = run_chunks(chat_chunks(req, plan, events(run, first), api_id, created, tokenizer), run, CHAT_PATH)
        return AsyncChunkStream(_as_openai_chunks(chunks, ChatCompletionChunk), CHAT_PATH, seconds)

    async def completions(
        self, params: dict[str, Any], seconds: float | None = None
    ) -> Completion | AsyncChunkStream[Completion]:
        req = parse_request(params, CompletionRequest, COMPLETIONS_PATH)
        self._check_model(req.model, COMPLETIONS_PATH)
        plan = self._plan(completion_plan, req, COMPLETIONS_PATH)
        tokenizer = self.engine.tokenizer
        echoes = echo_texts(req, tokenizer)
        api_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if not req.stream:
            async def answer() -> Completion:
                run, first = await self._start(plan, api_id, req, COMPLETIONS_PATH)
                accs = await collect(run, first, COMPLETIONS_PATH)
                return _as_openai(completion_response(req, plan, echoes, accs, api_id, created, tokenizer), Completion)

            return await within(answer(), seconds, COMPLETIONS_PATH)
        run, first = await within(self._start(plan, api_id, req, COMPLETIONS_PATH), seconds,
                                  COMPLETIONS_PATH)
        chunks = run_chunks(completion_chunks(req, plan, echoes, events(run, first), api_id, created, tokenizer),
                            run, COMPLETIONS_PATH)
        return AsyncChunkStream(_as_openai_chunks(chunks, Completion), COMPLETIONS_PATH, seconds)
