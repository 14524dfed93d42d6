"""LMDeploy's own routes: `/v1/chat/interactive`, `/v1/encode`, `/generate`, `/abort_request`."""
from __future__ import annotations

import uuid
from typing import AsyncIterator

import msgspec
from litestar import Request, Response, delete, post
from litestar.params import FromPath, JSONBody

from lmdeploy_sdk.server.assemble import ChoiceAccumulator
from lmdeploy_sdk.server.context import ContextDep, ServerContext, session_not_found
from lmdeploy_sdk.server.drain import ServerDraining, draining_error
from lmdeploy_sdk.server.errors import engine_error
from lmdeploy_sdk.server.generation import Generation
from lmdeploy_sdk.server.image_request import encode_with_images, refuse_images
from lmdeploy_sdk.server.interactive import new_messages, record_turn, turn_config
from lmdeploy_sdk.server.offload import in_worker
from lmdeploy_sdk.server.openapi_docs import BODY, COMMON, GENERATION, NDJSONOperation, SSEOperation, responses
from lmdeploy_sdk.server.schemas.native import (
    AbortRequest,
    AbortResponse,
    EncodeRequest,
    EncodeResponse,
    EndSessionResponse,
    GenerateMeta,
    GenerateRequest,
    GenerateResponse,
    InteractiveRequest,
    InteractiveResponse,
)
from lmdeploy_sdk.server.sessions import SessionNotFound
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
    check_text_fits,
    fold_seed,
    message_texts,
)


async def _encode(ctx: ServerContext, prompt, do_preprocess: bool, param: str) -> list[int]:
    """A prompt's ids, refused early if its text cannot fit in session_len, tokenized off the loop."""
    engine = ctx.engine
    texts = [prompt] if isinstance(prompt, str) else message_texts(prompt)
    check_text_fits(texts, engine.tokenizer, engine.session_len, param)
    try:
        return await in_worker(engine.tokenizer.encode_prompt, prompt, do_preprocess=do_preprocess)
    except ValueError as e:
        raise InvalidRequest(str(e), param) from e


@post("/v1/chat/interactive", status_code=200, responses=responses(InteractiveResponse, GENERATION),
      operation_class=NDJSONOperation, summary="One turn of a stateful chat session (LMDeploy)")
async def chat_interactive(data: JSONBody[InteractiveRequest], request: Request, ctx: ContextDep) -> Response:
    data = await strict_body(request, InteractiveRequest)
    engine = ctx.engine
    owner = ctx.owner(request)
    sid = data.session_id if data.session_id != -1 else ctx.sessions.new_id()
    entry = ctx.session(sid, owner)
    conv = entry.conversation if entry is not None else None
    history_tokens = conv.tokens if conv else 0

    def answer(text: str, tokens: int, input_tokens: int, finish: str | None) -> InteractiveResponse:
        return InteractiveResponse(text=text, tokens=tokens, input_tokens=input_tokens,
                                   history_tokens=history_tokens, finish_reason=finish, session_id=sid)

    if data.cancel:
        api_id = ctx.inflight.by_session.get(sid)
        if api_id is not None:
            await ctx.abort(api_id, owner)
        return Response(answer("", 0, 0, "abort"))
    turn = new_messages(data)
    if not turn:  # nothing to say: with interactive_mode=false this ends the session
        if not data.interactive_mode and entry is not None:
            ctx.end_session(sid)
        return Response(answer("", 0, 0, "stop"))
    history = conv.messages if conv else []
    messages = history + turn
    spans = None
    if engine.vision is not None:  # the model's processor renders the chat, images or not
        ids, found = await in_worker(encode_with_images, engine.vision, messages, engine.session_len, "prompt",
                                     len(history))
        spans = [found]
    else:
        refuse_images(turn, "prompt")
        ids = await _encode(ctx, messages, True, "prompt")
    check_prompt_length(ids, engine.session_len, "prompt")
    plan = GenerationPlan([ids], [turn_config(data, len(ids), engine.session_len)], [0], spans=spans)
    # A one-off turn with no history needs no engine session; otherwise reuse the session's KV.
    engine_session = sid if (data.interactive_mode or entry is not None) else None
    gen, first = await start_generation(ctx, request, plan, f"interactive-{uuid.uuid4().hex}", engine_session,
                                        end_session=not data.interactive_mode)
    input_tokens = max(len(ids) - history_tokens, 0)

    def finish(acc: ChoiceAccumulator) -> None:
        if not data.interactive_mode:
            return
        try:
            entry = ctx.sessions.get(sid, owner)
        except SessionNotFound:  # evicted meanwhile, and the id taken by another key
            entry = None
        record_turn(entry, messages, acc.text, len(ids) + acc.generated, acc.finish_reason)

    if data.stream:
        return ndjson_stream(_interactive_lines(gen, first, answer, input_tokens, finish), gen)
    acc = ChoiceAccumulator()
    for delta in (await collect(request, gen, first))[0]:
        acc.add(delta)
    finish(acc)
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
        finish(acc)
    except ServerDraining:
        yield msgspec.json.encode(draining_error().body()) + b"\n"
    finally:
        gen.close()


@post("/v1/encode", status_code=200, responses=responses(EncodeResponse, BODY),
      summary="Tokenize text (LMDeploy)")
async def encode(data: JSONBody[EncodeRequest], request: Request, ctx: ContextDep) -> Response:
    data = await strict_body(request, EncodeRequest)
    tokenizer = ctx.engine.tokenizer

    def one(text: str) -> list[int]:
        if not data.do_preprocess:
            return tokenizer.encode(text, add_special_tokens=data.add_bos)
        try:
            return tokenizer.encode_prompt(text, do_preprocess=True)
        except ValueError as e:
            raise InvalidRequest(str(e), "input") from e

    if isinstance(data.input, str):
        ids = await in_worker(one, data.input)
        return Response(EncodeResponse(input_ids=ids, length=len(ids)))
    batch = await in_worker(lambda: [one(t) for t in data.input])
    return Response(EncodeResponse(input_ids=batch, length=[len(ids) for ids in batch]))


@post("/generate", status_code=200, responses=responses(GenerateResponse, GENERATION),
      operation_class=SSEOperation, summary="Generate from raw text or token ids (LMDeploy)")
async def generate(data: JSONBody[GenerateRequest], request: Request, ctx: ContextDep) -> Response:
    data = await strict_body(request, GenerateRequest)
    engine = ctx.engine
    if (data.prompt is None) == (data.input_ids is None):
        raise InvalidRequest("give exactly one of 'prompt' and 'input_ids'", "prompt")
    ids = list(data.input_ids) if data.input_ids is not None else await _encode(ctx, data.prompt,
                                                                                data.do_preprocess, "prompt")
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
    gen, first = await start_generation(ctx, request, plan, f"gen-{uuid.uuid4().hex}", data.session_id,
                                        data.end_session)
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


@post("/abort_request", status_code=200, responses=responses(AbortResponse, (404,) + BODY),
      summary="Abort running requests by id, by session, or all (LMDeploy)")
async def abort_request(data: JSONBody[AbortRequest], request: Request, ctx: ContextDep) -> Response:
    data = await strict_body(request, AbortRequest)
    owner = ctx.owner(request)  # with API keys, a key aborts only its own requests
    if data.abort_all:
        targets = ctx.inflight.owned_by(owner)
    elif data.request_id is not None:
        targets = [data.request_id]
    elif data.session_id is not None:
        ctx.session(data.session_id, owner)  # 404 for another key's session
        api_id = ctx.inflight.by_session.get(data.session_id)
        targets = [api_id] if api_id is not None else []
    else:
        raise InvalidRequest("give request_id, session_id or abort_all=true", "request_id")
    aborted = 0
    for api_id in targets:
        aborted += await ctx.abort(api_id, owner)
    return Response(AbortResponse(aborted=aborted))


@delete("/v1/sessions/{session_id:int}", status_code=200,
        responses=responses(EndSessionResponse, (404,) + COMMON),
        summary="End a session: abort its running request and free its KV cache")
async def end_session(session_id: FromPath[int], request: Request, ctx: ContextDep) -> Response:
    if ctx.session(session_id, ctx.owner(request)) is None:
        raise session_not_found(session_id)
    ctx.end_session(session_id)
    return Response(EndSessionResponse(session_id=session_id, ended=True))


ROUTES = [chat_interactive, encode, generate, abort_request, end_session]
