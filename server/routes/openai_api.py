"""OpenAI's routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`."""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import msgspec
from litestar import Request, Response, get, post
from litestar.params import JSONBody

from lmdeploy_sdk.server.context import ContextDep, ServerContext
from lmdeploy_sdk.server.drain import ServerDraining, draining_error
from lmdeploy_sdk.server.errors import APIError, engine_error
from lmdeploy_sdk.server.generation import Generation
from lmdeploy_sdk.server.openai_bodies import (
    ChoiceFailed,
    accumulate,
    chat_chunks,
    chat_response,
    completion_chunks,
    completion_response,
    echo_texts,
    serves_model,
)
from lmdeploy_sdk.server.offload import in_worker
from lmdeploy_sdk.server.openapi_docs import COMMON, GENERATION, SSEOperation, responses
from lmdeploy_sdk.server.schemas.chat import ChatCompletionRequest, ChatCompletionResponse
from lmdeploy_sdk.server.schemas.completions import CompletionRequest, CompletionResponse, ModelCard, ModelList
from lmdeploy_sdk.server.streaming import (
    SSE_DONE,
    collect,
    events,
    sse_error,
    sse_event,
    sse_stream,
    start_generation,
)
from lmdeploy_sdk.server.strict_body import strict_body
from lmdeploy_sdk.server.translate import chat_plan, completion_plan


def check_model(ctx: ServerContext, model: str) -> None:
    served = ctx.engine.model_name
    if not serves_model(served, model):
        raise APIError(404, f"model {model!r} does not exist; this server serves {served!r}",
                       param="model", code="model_not_found")


@get("/v1/models", responses=responses(ModelList, COMMON), summary="List the served model")
async def list_models(ctx: ContextDep) -> Response:
    engine = ctx.engine
    card = ModelCard(id=engine.model_name, created=int(time.time()), root=engine.model_name,
                     max_model_len=engine.session_len)
    return Response(ModelList(data=[card]))


@post("/v1/chat/completions", status_code=200, responses=responses(ChatCompletionResponse, GENERATION),
      operation_class=SSEOperation, summary="Chat completion (OpenAI)")
async def chat_completions(data: JSONBody[ChatCompletionRequest], request: Request, ctx: ContextDep) -> Response:
    data = await strict_body(request, ChatCompletionRequest)
    engine = ctx.engine
    check_model(ctx, data.model)
    plan = await in_worker(chat_plan, data, engine.tokenizer, engine.session_len, engine.vision)
    api_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    gen, first = await start_generation(ctx, request, plan, api_id, data.session_id, data.end_session)
    if data.stream:
        chunks = chat_chunks(data, plan, events(gen, first), api_id, created, engine.tokenizer)
        return sse_stream(_sse(chunks, gen), gen)
    accs = accumulate(await collect(request, gen, first))
    return Response(chat_response(data, plan, accs, api_id, created, engine.tokenizer))


async def _sse(chunks: AsyncGenerator[msgspec.Struct, None], gen: Generation) -> AsyncIterator[bytes]:
    """Chunks as SSE events; a failed choice or a draining server ends the stream with an error event."""
    try:
        async for body in chunks:
            yield sse_event(body)
    except ChoiceFailed as e:
        yield sse_error(engine_error(e.error_code, e.error_message))
    except ServerDraining:
        yield sse_error(draining_error())
    finally:
        gen.close()
        await chunks.aclose()
    yield SSE_DONE


@post("/v1/completions", status_code=200, responses=responses(CompletionResponse, GENERATION),
      operation_class=SSEOperation, summary="Text completion (OpenAI)")
async def completions(data: JSONBody[CompletionRequest], request: Request, ctx: ContextDep) -> Response:
    data = await strict_body(request, CompletionRequest)
    engine = ctx.engine
    check_model(ctx, data.model)
    plan = await in_worker(completion_plan, data, engine.tokenizer, engine.session_len)
    echoes = await in_worker(echo_texts, data, engine.tokenizer)
    api_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    gen, first = await start_generation(ctx, request, plan, api_id, data.session_id, data.end_session)
    if data.stream:
        chunks = completion_chunks(data, plan, echoes, events(gen, first), api_id, created, engine.tokenizer)
        return sse_stream(_sse(chunks, gen), gen)
    accs = accumulate(await collect(request, gen, first))
    return Response(completion_response(data, plan, echoes, accs, api_id, created, engine.tokenizer))


ROUTES = [list_models, chat_completions, completions]
