"""Engine deltas -> OpenAI chat/completion bodies and stream chunks (msgspec structs, no web framework).

One implementation shared by the server's routes and the in-process OpenAI shim,
so both answer the same request with the same body. Transport stays with the
caller: how chunks are sent, how a failed choice is reported, when the engine
run is closed.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from pathlib import PurePath

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
from lmdeploy_sdk.server.tool_calls import ToolCallStream, split_tool_calls
from lmdeploy_sdk.server.translate import GenerationPlan, completion_prompts

Event = tuple[int, Response]
"""(choice index, engine delta), in arrival order."""


class ChoiceFailed(Exception):
    """A choice ended with finish_reason='error' mid-stream; the caller reports it its own way."""

    def __init__(self, resp: Response) -> None:
        super().__init__(resp.error_message)
        self.error_code = resp.error_code
        self.error_message = resp.error_message


def accumulate(per_choice: Iterable[Iterable[Response]]) -> list[ChoiceAccumulator]:
    """Each choice's deltas folded into one accumulator (non-streamed answers)."""
    accs = []
    for deltas in per_choice:
        acc = ChoiceAccumulator()
        for d in deltas:
            acc.add(d)
        accs.append(acc)
    return accs


def usage(plan: GenerationPlan, accs: list[ChoiceAccumulator]) -> Usage:
    return plan_usage(plan.prompt_tokens, accs, first_choices(plan.prompt_of_choice))


def chat_response(
    req: ChatCompletionRequest, plan: GenerationPlan, accs: list[ChoiceAccumulator], api_id: str, created: int,
    tokenizer: TokenDecoder,
) -> ChatCompletionResponse:
    top_k = req.top_logprobs or 0
    choices = []
    for i, acc in enumerate(accs):
        fmt = plan.tool_format
        content, calls = split_tool_calls(fmt, acc.text) if fmt is not None else (acc.text, [])
        choices.append(ChatChoice(
            index=i,
            message=AssistantMessage(content=content if content or not calls else None, tool_calls=calls or None),
            finish_reason="tool_calls" if calls else acc.finish_reason,
            logprobs=chat_logprobs(tokenizer, acc.token_ids, acc.logprobs, top_k) if req.logprobs else None,
        ))
    return ChatCompletionResponse(id=api_id, created=created, model=req.model, choices=choices,
                                  usage=usage(plan, accs))


async def chat_chunks(
    req: ChatCompletionRequest, plan: GenerationPlan, events: AsyncIterator[Event], api_id: str, created: int,
    tokenizer: TokenDecoder,
) -> AsyncGenerator[ChatCompletionChunk, None]:
    """A role chunk per choice, a chunk per delta, then usage if asked; ChoiceFailed on an error delta."""
    top_k = req.top_logprobs or 0
    accs = [ChoiceAccumulator() for _ in range(plan.num_choices)]
    fmt = plan.tool_format
    tools = [ToolCallStream(fmt) for _ in range(plan.num_choices)] if fmt is not None else None

    def chunk(choices: list[ChatStreamChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=api_id, created=created, model=req.model, choices=choices, usage=usage)

    yield chunk([ChatStreamChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                 for i in range(plan.num_choices)])
    async for index, resp in events:
        if resp.finish_reason == "error":
            raise ChoiceFailed(resp)
        accs[index].add(resp)
        lps = None
        if req.logprobs and resp.logprobs:
            lps = chat_logprobs(tokenizer, resp.token_ids, resp.logprobs, top_k)
        text, calls, finish = resp.text, [], resp.finish_reason
        if tools is not None:
            text, calls = tools[index].feed(text)
            if finish is not None:
                tail, more = tools[index].flush()
                text, calls = text + tail, calls + more
                finish = "tool_calls" if tools[index].calls else finish
        if text or calls or finish or lps:
            delta = DeltaMessage(content=text or None, tool_calls=calls or None)
            yield chunk([ChatStreamChoice(index=index, delta=delta, finish_reason=finish, logprobs=lps)])
    if req.stream_options is not None and req.stream_options.include_usage:
        yield chunk([], usage(plan, accs))


def echo_texts(req: CompletionRequest, tokenizer: TokenDecoder) -> list[str]:
    """Each prompt's text for echo=True (token-id prompts are decoded), else empty strings."""
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
    return CompletionResponse(id=api_id, created=created, model=req.model, choices=choices, usage=usage(plan, accs))


async def completion_chunks(
    req: CompletionRequest, plan: GenerationPlan, echoes: list[str], events: AsyncIterator[Event], api_id: str,
    created: int, tokenizer: TokenDecoder,
) -> AsyncGenerator[CompletionChunk, None]:
    """Echo chunks (if asked), a chunk per delta, then usage if asked; ChoiceFailed on an error delta."""
    accs = [ChoiceAccumulator() for _ in range(plan.num_choices)]
    offsets = [0] * plan.num_choices

    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> CompletionChunk:
        return CompletionChunk(id=api_id, created=created, model=req.model, choices=choices, usage=usage)

    for i in range(plan.num_choices):
        echo = echoes[plan.prompt_of_choice[i]]
        if echo:
            yield chunk([CompletionChoice(index=i, text=echo, finish_reason=None)])
    async for index, resp in events:
        if resp.finish_reason == "error":
            raise ChoiceFailed(resp)
        accs[index].add(resp)
        lps = None
        if req.logprobs is not None and resp.logprobs:
            lps = completion_logprobs(tokenizer, resp.token_ids, resp.logprobs, req.logprobs, offsets[index])
        offsets[index] += len(resp.text)
        if resp.text or resp.finish_reason or lps:
            yield chunk([CompletionChoice(index=index, text=resp.text, logprobs=lps,
                                          finish_reason=resp.finish_reason)])
    if req.stream_options is not None and req.stream_options.include_usage:
        yield chunk([], usage(plan, accs))


def serves_model(served: str, model: str) -> bool:
    """Whether a request's `model` names the served one: --model-name, or the model path as
    typed (e.g. ./work_dir), or that path's last component (work_dir), as LMDeploy accepts."""
    short = PurePath(served).name
    return model == served or bool(short) and model == short
