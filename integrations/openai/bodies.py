"""Engine deltas -> the server's response bodies, field for field as its routes build them.

The structs are the server's own (msgspec) schemas; the clients turn them into
the `openai` package's types the way the `openai` client turns the server's JSON.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

from lmdeploy_sdk.integrations.openai.api_errors import engine_status_error, stream_error
from lmdeploy_sdk.integrations.openai.choice_run import ChoiceRun
from lmdeploy_sdk.messages import Response
from lmdeploy_sdk.server.assemble import (
    ChoiceAccumulator,
    TokenDecoder,
    chat_logprobs,
    completion_logprobs,
    first_choices,
    plan_usage,
)
from lmdeploy_sdk.server.schemas.chat import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatStreamChoice,
    DeltaMessage,
)
from lmdeploy_sdk.server.schemas.common import Usage
from lmdeploy_sdk.server.schemas.completions import (
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
)
from lmdeploy_sdk.server.translate import GenerationPlan, completion_prompts

Event = tuple[int, Response]


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


async def _events(run: ChoiceRun, first: Event) -> AsyncIterator[Event]:
    yield first
    async for event in run:
        yield event


def _usage(plan: GenerationPlan, accs: list[ChoiceAccumulator]) -> Usage:
    return plan_usage(plan.prompt_tokens, accs, first_choices(plan.prompt_of_choice))


def chat_response(
    req: ChatCompletionRequest, plan: GenerationPlan, accs: list[ChoiceAccumulator], api_id: str, created: int,
    tokenizer: TokenDecoder,
) -> ChatCompletionResponse:
    top_k = req.top_logprobs or 0
    choices = [
        ChatChoice(
            index=i,
            message=AssistantMessage(content=acc.text),
            finish_reason=acc.finish_reason,
            logprobs=chat_logprobs(tokenizer, acc.token_ids, acc.logprobs, top_k) if req.logprobs else None,
        )
        for i, acc in enumerate(accs)
    ]
    return ChatCompletionResponse(id=api_id, created=created, model=req.model, choices=choices,
                                  usage=_usage(plan, accs))


async def chat_chunks(
    req: ChatCompletionRequest, plan: GenerationPlan, run: ChoiceRun, first: Event, api_id: str, created: int,
    tokenizer: TokenDecoder, path: str,
) -> AsyncIterator[ChatCompletionChunk]:
    """The streamed chunks: a role chunk per choice, a chunk per delta, then usage if asked."""
    top_k = req.top_logprobs or 0
    accs = [ChoiceAccumulator() for _ in range(plan.num_choices)]

    def chunk(choices: list[ChatStreamChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=api_id, created=created, model=req.model, choices=choices, usage=usage)

    try:
        yield chunk([ChatStreamChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                     for i in range(plan.num_choices)])
        async for index, resp in _events(run, first):
            if resp.finish_reason == "error":
                raise stream_error(resp.error_code, resp.error_message, path)
            accs[index].add(resp)
            lps = None
            if req.logprobs and resp.logprobs:
                lps = chat_logprobs(tokenizer, resp.token_ids, resp.logprobs, top_k)
            if resp.text or resp.finish_reason or lps:
                yield chunk([ChatStreamChoice(index=index, delta=DeltaMessage(content=resp.text or None),
                                              finish_reason=resp.finish_reason, logprobs=lps)])
        if req.stream_options is not None and req.stream_options.include_usage:
            yield chunk([], _usage(plan, accs))
    finally:
        run.close()


def echo_texts(req: CompletionRequest, tokenizer: TokenDecoder) -> list[str]:
    """Each prompt's text, for echo=True (token-id prompts are decoded)."""
    if not req.echo:
        return [""] * len(completion_prompts(req.prompt))
    return [p if isinstance(p, str) else tokenizer.decode(p) for p in completion_prompts(req.prompt)]


def completion_response(
    req: CompletionRequest, plan: GenerationPlan, echoes: list[str], accs: list[ChoiceAccumulator], api_id: str,
    created: int, tokenizer: TokenDecoder,
) -> CompletionResponse:
    choices = []
    for i, acc in enumerate(accs):
        lps = None
        if req.logprobs is not None:
            lps = completion_logprobs(tokenizer, acc.token_ids, acc.logprobs, req.logprobs)
        choices.append(CompletionChoice(index=i, text=echoes[plan.prompt_of_choice[i]] + acc.text, logprobs=lps,
                                        finish_reason=acc.finish_reason))
    return CompletionResponse(id=api_id, created=created, model=req.model, choices=choices, usage=_usage(plan, accs))


async def completion_chunks(
    req: CompletionRequest, plan: GenerationPlan, echoes: list[str], run: ChoiceRun, first: Event, api_id: str,
    created: int, tokenizer: TokenDecoder, path: str,
) -> AsyncIterator[CompletionChunk]:
    """Echo chunks (if asked), a chunk per delta, then usage if asked."""
    accs = [ChoiceAccumulator() for _ in range(plan.num_choices)]
    offsets = [0] * plan.num_choices

    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> CompletionChunk:
        return CompletionChunk(id=api_id, created=created, model=req.model, choices=choices, usage=usage)

    try:
        for i in range(plan.num_choices):
            echo = echoes[plan.prompt_of_choice[i]]
            if echo:
                yield chunk([CompletionChoice(index=i, text=echo, finish_reason=None)])
        async for index, resp in _events(run, first):
            if resp.finish_reason == "error":
                raise stream_error(resp.error_code, resp.error_message, path)
            accs[index].add(resp)
            lps = None
            if req.logprobs is not None and resp.logprobs:
                lps = completion_logprobs(tokenizer, resp.token_ids, resp.logprobs, req.logprobs, offsets[index])
            offsets[index] += len(resp.text)
            if resp.text or resp.finish_reason or lps:
                yield chunk([CompletionChoice(index=index, text=resp.text, logprobs=lps,
                                              finish_reason=resp.finish_reason)])
        if req.stream_options is not None and req.stream_options.include_usage:
            yield chunk([], _usage(plan, accs))
    finally:
        run.close()
