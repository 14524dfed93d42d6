"""LMDeploy's own routes: `/v1/chat/interactive`, `/v1/encode`, `/generate`, `/abort_request`."""
from __future__ import annotations

import uuid
from typing import AsyncIterator

import msgspec
from litestar import Request, Response, post
from litestar.params import JSONBody

from lmdeploy_sdk.server.assemble import ChoiceAccumulator
from lmdeploy_sdk.server.context import ContextDep, ServerContext
from lmdeploy_sdk.server.drain import ServerDraining, draining_error
from lmdeploy_sdk.server.errors import engine_error
from lmdeploy_sdk.server.generation import Generation
from lmdeploy_sdk.server.interactive import after_turn, new_messages, turn_config
from lmdeploy_sdk.server.openapi_docs import COMMON, GENERATION, NDJSONOperation, SSEOperation, responses
from lmdeploy_sdk.server.schemas.native import (
    AbortRequest,
    AbortResponse,
    EncodeRequest,
    EncodeResponse,
    GenerateMeta,
    GenerateRequest,
    GenerateResponse,
    InteractiveRequest,
    InteractiveResponse,
)
from lmdeploy_sdk.server.streaming import (
    SSE_DONE,
    collect,
    events,
    ndjson_stream,
    sse_error,
    sse_event,
    sse_stream,
    start_generation,
)
from lmdeploy_sdk.server.strict_body import strict_body
from lmdeploy_sdk.server.translate import (
    GenerationPlan,
    InvalidRequest,
    build_config,
    check_prompt_length,
    fold_seed,
)


def _encode(ctx: ServerContext, prompt, do_preprocess: bool, param: str) -> list[int]:
    try:
        return ctx.engine.tokenizer.encode_prompt(prompt, do_preprocess=do_preprocess)
    except ValueError as e:
        raise InvalidRequest(str(e), param) from e


@post("/v1/chat/interactive", status_code=200, responses=responses(InteractiveResponse, GENERATION),
      operation_class=NDJSONOperation, summary="One turn of a stateful chat session (LMDeploy)")
async def chat_interactive(data: JSONBody[InteractiveRequest], request: Request, ctx: ContextDep) -> Response:
    data = await strict_body(request, InteractiveRequest)
    engine = ctx.engine
    sid = data.session_id if data.session_id != -1 else ctx.new_session_id()
    conv = ctx.conversations.get(sid)
    history_tokens = conv.tokens if conv else 0

    def answer(text: str, tokens: int, input_tokens: int, finish: str | None) -> InteractiveResponse:
        return InteractiveResponse(text=text, tokens=tokens, input_tokens=input_tokens,
                                   history_tokens=history_tokens, finish_reason=finish, session_id=sid)

    if data.cancel:
        api_id = ctx.inflight.by_session.get(sid)
        if api_id is not None:
            await ctx.abort(api_id)
        return Response(answer("", 0, 0, "abort"))
    turn = new_messages(data)
    if not turn:  # nothing to say: with interactive_mode=false this ends the session
        if not data.interactive_mode:
            ctx.conversations.pop(sid, None)
            await engine.end_session(sid)
        return Response(answer("", 0, 0, "stop"))
    messages = (conv.messages if conv else []) + turn
    ids = _encode(ctx, messages, True, "prompt")
    check_prompt_length(ids, engine.session_len, "prompt")
    plan = GenerationPlan([ids], [turn_config(data, len(ids), engine.session_len)], [0])
    # A one-off turn with no history needs no engine session; otherwise reuse the session's KV.
    engine_session = sid if (data.interactive_mode or conv is not None) else None
    gen, first = await start_generation(ctx, request, plan, f"interactive-{uuid.uuid4().hex}", engine_session)
    input_tokens = max(len(ids) - history_tokens, 0)

    async def finish(acc: ChoiceAccumulator) -> None:
        after_turn(ctx.conversations, sid, messages, acc.text, len(ids) + acc.generated, acc.finish_reason,
                   data.interactive_mode)
        if not data.interactive_mode and engine_session is not None:
            await engine.end_session(sid)

    if data.stream:
        return ndjson_stream(_interactive_lines(gen, first, answer, input_tokens, finish), gen)
    acc = ChoiceAccumulator()
    for delta in (await collect(request, gen, first))[0]:
        acc.add(delta)
    await finish(acc)
    return Response(answer(acc.text, acc.generated, input_tokens, acc.finish_reason))


async def _interactive_lines(gen: Generation, first, answer, input_tokens: int, finish) -> AsyncIterator[bytes]:
    acc = ChoiceAccumulator()
    try:
        async for _, resp in events(gen, first):
            if resp.finish_reason == "error":
                yield msgspec.json.encode(engine_error(resp.error_code, resp.error_message).body()) + b"\n"
                return
            acc.add(resp)
            yield msgspec.json.encode(answer(resp.text, acc.generated, input_tokens, resp.finish_reason)) + b"\n"
        await finish(acc)
    except ServerDraining:
        yield msgspec.json.encode(draining_error().body()) + b"\n"
    finally:
        gen.close()


@post("/v1/encode", status_code=200, responses=responses(EncodeResponse, (400,) + COMMON),
      summary="Tokenize text (LMDeploy)")
async def encode(data: JSONBody[EncodeRequest], request: Request, ctx: ContextDep) -> Response:
    data = await strict_body(request, EncodeRequest)
    tokenizer = ctx.engine.tokenizer

    def one(text: str) -> list[int]:
        if data.do_preprocess:
            return _encode(ctx, text, True, "input")
        return tokenizer.encode(text, add_special_tokens=data.add_bos)

    if isinstance(data.input, str):
        ids = one(data.input)
        return Response(EncodeResponse(input_ids=ids, length=len(ids)))
    batch = [one(t) for t in data.input]
    return Response(EncodeResponse(input_ids=batch, length=[len(ids) for ids in batch]))


@post("/generate", status_code=200, responses=responses(GenerateResponse, GENERATION),
      operation_class=SSEOperation, summary="Generate from raw text or token ids (LMDeploy)")
async def generate(data: JSONBody[GenerateRequest], request: Request, ctx: ContextDep) -> Response:
    data = await strict_body(request, GenerateRequest)
    engine = ctx.engine
    if (data.prompt is None) == (data.input_ids is None):
        raise InvalidRequest("give exactly one of 'prompt' and 'input_ids'", "prompt")
    ids = list(data.input_ids) if data.input_ids is not None else _encode(ctx, data.prompt, data.do_preprocess,
                                                                          "prompt")
    if not ids:
        raise InvalidRequest("input_ids must not be empty", "input_ids")
    check_prompt_length(ids, engine.session_len, "prompt")
    config = build_config(
        max_new_tokens=data.max_tokens, temperature=data.temperature, top_p=data.top_p, top_k=data.top_k,
        min_p=data.min_p, repetition_penalty=data.repetition_penalty, ignore_eos=data.ignore_eos,
        skip_special_tokens=data.skip_special_tokens, stop=data.stop, stop_token_ids=data.stop_token_ids,
        include_stop_str_in_output=data.include_stop_str_in_output, random_seed=fold_seed(data.seed),
        logprobs=0 if data.return_logprob else None,
    )
    plan = GenerationPlan([ids], [config], [0])
    gen, first = await start_generation(ctx, request, plan, f"gen-{uuid.uuid4().hex}", data.session_id)
    if data.stream:
        return sse_stream(_generate_events(gen, first, len(ids), data.return_logprob), gen)
    acc = ChoiceAccumulator()
    for delta in (await collect(request, gen, first))[0]:
        acc.add(delta)
    meta = _meta(len(ids), acc, acc.token_ids, acc.logprobs, data.return_logprob)
    return Response(GenerateResponse(text=acc.text, output_ids=acc.token_ids, meta_info=meta))


def _meta(prompt_len: int, acc: ChoiceAccumulator, ids: list[int], lps, want_lps: bool) -> GenerateMeta:
    pairs = [(lp[t], t) for t, lp in zip(ids, lps or [])] if want_lps else None
    return GenerateMeta(prompt_tokens=prompt_len, completion_tokens=acc.generated, cached_tokens=acc.cached_tokens,
                        finish_reason=acc.finish_reason, output_token_logprobs=pairs)


async def _generate_events(gen: Generation, first, prompt_len: int, want_lps: bool) -> AsyncIterator[bytes]:
    acc = ChoiceAccumulator()
    try:
        async for _, resp in events(gen, first):
            if resp.finish_reason == "error":
                yield sse_error(engine_error(resp.error_code, resp.error_message))
                break
            acc.add(resp)
            meta = _meta(prompt_len, acc, resp.token_ids, resp.logprobs, want_lps)
            yield sse_event(GenerateResponse(text=resp.text, output_ids=resp.token_ids, meta_info=meta))
    except ServerDraining:
        yield sse_error(draining_error())
    finally:
        gen.close()
    yield SSE_DONE


@post("/abort_request", status_code=200, responses=responses(AbortResponse, (400,) + COMMON),
      summary="Abort running requests by id, by session, or all (LMDeploy)")
async def abort_request(data: JSONBody[AbortRequest], request: Request, ctx: ContextDep) -> Response:
    data = await strict_body(request, AbortRequest)
    if data.abort_all:
        targets = list(ctx.inflight.by_api_id)
    elif data.request_id is not None:
        targets = [data.request_id]
    elif data.session_id is not None:
        api_id = ctx.inflight.by_session.get(data.session_id)
        targets = [api_id] if api_id is not None else []
    else:
        raise InvalidRequest("give request_id, session_id or abort_all=true", "request_id")
    aborted = 0
    for api_id in targets:
        aborted += await ctx.abort(api_id)
    return Response(AbortResponse(aborted=aborted))


ROUTES = [chat_interactive, encode, generate, abort_request]
