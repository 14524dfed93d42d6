"""LangChain messages -> OpenAI chat messages, and `openai` answers -> LangChain results."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, Generation, GenerationChunk

PROVIDER = "lmdeploy"


def openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    return convert_to_openai_messages(list(messages), text_format="string")


def usage_metadata(usage: Any) -> UsageMetadata | None:
    """From openai's CompletionUsage; cached prompt tokens (KV reused) are `cache_read`."""
    if usage is None:
        return None
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return UsageMetadata(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
                         total_tokens=usage.total_tokens, input_token_details={"cache_read": cached})


def token_usage(usage: Any) -> dict[str, Any]:
    return usage.model_dump(exclude_none=True) if usage is not None else {}


def _tool_calls(raw_calls: list[Any] | None) -> tuple[list[Any], list[Any]]:
    """(tool_calls, invalid_tool_calls) of an assistant message."""
    calls, invalid = [], []
    for raw in raw_calls or []:
        d = raw.model_dump() if hasattr(raw, "model_dump") else dict(raw)
        try:
            calls.append(parse_tool_call(d, return_id=True))
        except OutputParserException as e:  # the model wrote arguments that are not JSON
            invalid.append(make_invalid_tool_call(d, str(e)))
    return calls, invalid


def chat_result(completion: Any) -> ChatResult:
    """An openai ChatCompletion as LangChain's ChatResult (one generation per choice)."""
    usage = usage_metadata(completion.usage)
    generations = []
    for choice in completion.choices:
        calls, invalid = _tool_calls(choice.message.tool_calls)
        meta = {"model_name": completion.model, "finish_reason": choice.finish_reason, "model_provider": PROVIDER}
        message = AIMessage(content=choice.message.content or "", tool_calls=calls, invalid_tool_calls=invalid,
                            usage_metadata=usage, response_metadata=meta, id=completion.id)
        info = {"finish_reason": choice.finish_reason}
        if choice.logprobs is not None:
            info["logprobs"] = choice.logprobs.model_dump()
        generations.append(ChatGeneration(message=message, generation_info=info))
    return ChatResult(generations=generations,
                      llm_output={"token_usage": token_usage(completion.usage), "model_name": completion.model})


def delta_chunk(chunk: Any) -> ChatGenerationChunk | None:
    """The text / tool-call pieces of one openai ChatCompletionChunk (None if it has none)."""
    if not chunk.choices:
        return None
    delta = chunk.choices[0].delta
    calls = [
        tool_call_chunk(name=c.function.name if c.function else None,
                        args=c.function.arguments if c.function else None, id=c.id, index=c.index)
        for c in (delta.tool_calls or [])
    ]
    if not delta.content and not calls:
        return None
    return ChatGenerationChunk(message=AIMessageChunk(content=delta.content or "", tool_call_chunks=calls,
                                                     id=chunk.id))


def last_chunk(model_name: str, finish_reason: str | None, usage: Any, stream_id: str | None) -> ChatGenerationChunk:
    """The closing chunk: the only one with usage and response metadata, so sums stay right."""
    meta = {"model_name": model_name, "finish_reason": finish_reason, "model_provider": PROVIDER}
    message = AIMessageChunk(content="", usage_metadata=usage_metadata(usage), response_metadata=meta,
                             chunk_position="last", id=stream_id)
    return ChatGenerationChunk(message=message, generation_info={"finish_reason": finish_reason})


def completion_generations(completion: Any, num_prompts: int) -> list[list[Generation]]:
    """An openai Completion's choices grouped per prompt (choices are prompt-major)."""
    choices = sorted(completion.choices, key=lambda c: c.index)
    per_prompt = len(choices) // num_prompts
    out = []
    for i in range(num_prompts):
        group = choices[i * per_prompt:(i + 1) * per_prompt]
        out.append([Generation(text=c.text, generation_info={"finish_reason": c.finish_reason}) for c in group])
    return out


def text_chunk(chunk: Any) -> GenerationChunk | None:
    """The text of one streamed openai Completion chunk (None for the usage chunk)."""
    if not chunk.choices:
        return None
    choice = chunk.choices[0]
    info = {"finish_reason": choice.finish_reason} if choice.finish_reason else None
    if not choice.text and info is None:
        return None
    return GenerationChunk(text=choice.text, generation_info=info)
