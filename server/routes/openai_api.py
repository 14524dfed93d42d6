"""OpenAI's routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`."""
from __future__ import annotations

import time
import uuid
from typing import AsyncIterator

from litestar import Request, Response, get, post
from litestar.params import JSONBody

from lmdeploy_sdk.server.assemble import (
    ChoiceAccumulator,
    chat_logprobs,
    completion_logprobs,
    first_choices,
    plan_usage,
)
from lmdeploy_sdk.server.context import ContextDep, ServerContext
from lmdeploy_sdk.server.drain import ServerDraining, draining_error
from lmdeploy_sdk.server.errors import APIError, engine_error
from lmdeploy_sdk.server.generation import Generation
from lmdeploy_sdk.server.openapi_docs import COMMON, GENERATION, SSEOperation, responses
from lmdeploy_sdk.server.schemas.chat import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatStreamChoice,
    DeltaMessage,
)
from lmdeploy_sdk.server.schemas.completions import (
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
)
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
from lmdeploy_sdk.server.tool_calls import ToolCallStream, split_tool_calls
from lmdeploy_sdk.server.translate import GenerationPlan, chat_plan, completion_plan, completion_prompts


def check_model(ctx: ServerContext, model: str) -> None:
    served = ctx.engine.model_name
    if model != served:
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
    plan = chat_plan(data, engine.tokenizer, engine.session_len)
    api_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    gen, first = await start_generation(ctx, request, plan, api_id, data.session_id)
    if data.stream:
        return sse_stream(_chat_chunks(ctx, data, plan, gen, first, api_id, created), gen)
    accs = _accumulate(await collect(request, gen, first))
    top_k = data.top_logprobs or 0
    choices = []
    for i, acc in enumerate(accs):
        content, calls = split_tool_calls(acc.text) if _uses_tools(data) else (acc.text, [])
        choices.append(ChatChoice(
            index=i,
            message=AssistantMessage(content=content if content or not calls else None, tool_calls=calls or None),
            finish_reason="tool_calls" if calls else acc.finish_reason,
            logprobs=chat_logprobs(engine.tokenizer, acc.token_ids, acc.logprobs, top_k) if data.logprobs else None,
        ))
    usage = plan_usage(plan.prompt_tokens, accs, first_choices(plan.prompt_of_choice))
    return Response(ChatCompletionResponse(id=api_id, created=created, model=data.model, choices=choices,
                                           usage=usage))


def _uses_tools(data: ChatCompletionRequest) -> bool:
    return bool(data.tools) and data.tool_choice != "none"


def _accumulate(per_choice) -> list[ChoiceAccumulator]:
    accs = []
    for deltas in per_choice:
        acc = ChoiceAccumulator()
        for d in deltas:
            acc.add(d)
        accs.append(acc)
    return accs


async def _chat_chunks(
    ctx: ServerContext, data: ChatCompletionRequest, plan: GenerationPlan, gen: Generation, first, api_id: str,
    created: int,
) -> AsyncIterator[bytes]:
    tokenizer = ctx.engine.tokenizer
    top_k = data.top_logprobs or 0
    accs = [ChoiceAccumulator() for _ in range(plan.num_choices)]
    tools = [ToolCallStream() for _ in range(plan.num_choices)] if _uses_tools(data) else None

    def chunk(choices: list[ChatStreamChoice], usage=None) -> bytes:
        return sse_event(ChatCompletionChunk(id=api_id, created=created, model=data.model, choices=choices,
                                             usage=usage))

    try:
        yield chunk([ChatStreamChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                     for i in range(plan.num_choices)])
        async for index, resp in events(gen, first):
            if resp.finish_reason == "error":
                yield sse_error(engine_error(resp.error_code, resp.error_message))
                break
            accs[index].add(resp)
            lps = None
            if data.logprobs and resp.logprobs:
                lps = chat_logprobs(tokenizer, resp.token_ids, resp.logprobs, top_k)
            text, calls, finish = resp.text, [], resp.finish_reason
            if tools is not None:
                text, calls = tools[index].feed(text)
                if finish is not None:
                    text += tools[index].flush()
                    finish = "tool_calls" if tools[index].calls else finish
            if text or calls or finish or lps:
                delta = DeltaMessage(content=text or None, tool_calls=calls or None)
                yield chunk([ChatStreamChoice(index=index, delta=delta, finish_reason=finish, logprobs=lps)])
        else:
            if data.stream_options is not None and data.stream_options.include_usage:
                yield chunk([], plan_usage(plan.prompt_tokens, accs, first_choices(plan.prompt_of_choice)))
    except ServerDraining:
        yield sse_error(draining_error())
    finally:
        gen.close()
    yield SSE_DONE


@post("/v1/completions", status_code=200, responses=responses(CompletionResponse, GENERATION),
      operation_class=SSEOperation, summary="Text completion (OpenAI)")
async def completions(data: JSONBody[CompletionRequest], request: Request, ctx: ContextDep) -> Response:
    data = await strict_body(request, CompletionRequest)
    engine = ctx.engine
    check_model(ctx, data.model)
    plan = completion_plan(data, engine.tokenizer, engine.session_len)
    echoes = _echo_texts(ctx, data) if data.echo else [""] * len(plan.prompts)
    api_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    gen, first = await start_generation(ctx, request, plan, api_id, data.session_id)
    if data.stream:
        return sse_stream(_completion_chunks(ctx, data, plan, echoes, gen, first, api_id, created), gen)
    accs = _accumulate(await collect(request, gen, first))
    choices = []
    for i, acc in enumerate(accs):
        lps = None
        if data.logprobs is not None:
            lps = completion_logprobs(engine.tokenizer, acc.token_ids, acc.logprobs, data.logprobs)
        echo = echoes[plan.prompt_of_choice[i]]
        choices.append(CompletionChoice(index=i, text=echo + acc.text, logprobs=lps,
                                        finish_reason=acc.finish_reason))
    usage = plan_usage(plan.prompt_tokens, accs, first_choices(plan.prompt_of_choice))
    return Response(CompletionResponse(id=api_id, created=created, model=data.model, choices=choices, usage=usage))


def _echo_texts(ctx: ServerContext, data: CompletionRequest) -> list[str]:
    tokenizer = ctx.engine.tokenizer
    return [p if isinstance(p, str) else tokenizer.decode(p) for p in completion_prompts(data.prompt)]


async def _completion_chunks(
    ctx: ServerContext, data: CompletionRequest, plan: GenerationPlan, echoes: list[str], gen: Generation, first,
    api_id: str, created: int,
) -> AsyncIterator[bytes]:
    tokenizer = ctx.engine.tokenizer
    accs = [ChoiceAccumulator() for _ in range(plan.num_choices)]
    offsets = [0] * plan.num_choices

    def chunk(choices: list[CompletionChoice], usage=None) -> bytes:
        return sse_event(CompletionChunk(id=api_id, created=created, model=data.model, choices=choices, usage=usage))

    try:
        for i in range(plan.num_choices):
            echo = echoes[plan.prompt_of_choice[i]]
            if echo:
                yield chunk([CompletionChoice(index=i, text=echo, finish_reason=None)])
        async for index, resp in events(gen, first):
            if resp.finish_reason == "error":
                yield sse_error(engine_error(resp.error_code, resp.error_message))
                break
            accs[index].add(resp)
            lps = None
            if data.logprobs is not None and resp.logprobs:
                lps = completion_logprobs(tokenizer, resp.token_ids, resp.logprobs, data.logprobs, offsets[index])
            offsets[index] += len(resp.text)
            if resp.text or resp.finish_reason or lps:
                yield chunk([CompletionChoice(index=index, text=resp.text, logprobs=lps,
                                              finish_reason=resp.finish_reason)])
        else:
            if data.stream_options is not None and data.stream_options.include_usage:
                yield chunk([], plan_usage(plan.prompt_tokens, accs, first_choices(plan.prompt_of_choice)))
    except ServerDraining:
        yield sse_error(draining_error())
    finally:
        gen.close()
    yield SSE_DONE


ROUTES = [list_models, chat_completions, completions]
