"""`/v1/chat/completions` request, response and stream chunk (OpenAI's shapes plus LMDeploy's extras).

Sampling defaults are LMDeploy's (temperature 0.7, top_k 40), since its users are who we serve.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from lmdeploy_sdk.server.schemas.common import FinishReason, StreamOptions, Usage
from lmdeploy_sdk.server.sessions import MAX_SESSION_ID

# Largest n (choices per request) we accept: each choice is a sequence in the engine.
MAX_N = 64

# Token counts, top_k and token ids: beyond int32 they mean nothing to the engine.
NonNegativeInt = Annotated[int, Meta(ge=0, le=2**31 - 1)]
# A session the client names (the server picks random ids below the same bound: exact in JavaScript).
SessionId = Annotated[int, Meta(ge=0, le=MAX_SESSION_ID)]
# Penalties far outside this range overflow float32 logits; they are rejected rather than sampled as NaN.
RepetitionPenalty = Annotated[float, Meta(ge=1e-6, le=1e6)]
# Any int64 seed is accepted; choice i of a request uses (seed + i) folded into 64 bits.
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]


class ImageURL(msgspec.Struct, kw_only=True):
    url: str  # a data: URL (base64) or an http(s) URL
    detail: str | None = None  # OpenAI's hint; accepted, not used


class ContentPart(msgspec.Struct, kw_only=True):
    """One part of a multi-part message: text, or (for a vision-language model) image_url."""

    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ToolCallFunction(msgspec.Struct, kw_only=True):
    name: str
    arguments: str


class ToolCall(msgspec.Struct, kw_only=True):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ToolCallDelta(msgspec.Struct, kw_only=True):
    """A tool call in a streamed chunk (OpenAI numbers them with `index`)."""

    index: int
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(msgspec.Struct, kw_only=True):
    """content may be null (OpenAI's schema allows it); it may be left out only on an
    assistant turn that calls tools."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None | msgspec.UnsetType = msgspec.UNSET
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(msgspec.Struct, kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(msgspec.Struct, kw_only=True):
    name: str


class NamedToolChoice(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: NamedFunction


class ResponseFormat(msgspec.Struct, kw_only=True, omit_defaults=True):
    """OpenAI's forms, LMDeploy's regex_schema, and a Lark `grammar` (our extension)."""

    type: Literal["text", "json_object", "json_schema", "regex_schema", "grammar"]
    json_schema: dict[str, Any] | None = None
    regex_schema: str | None = None
    grammar: str | None = None


# OpenAI's logit_bias: token id (as a JSON object key) -> a bias in [-100, 100]
LogitBias = dict[str, Annotated[float, Meta(ge=-100, le=100)]]


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    model: str
    # LMDeploy's server also takes one user message as a plain string
    messages: Annotated[list[ChatMessage], Meta(min_length=1)] | str
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] = 1.0
    n: Annotated[int, Meta(ge=1, le=MAX_N)] = 1
    max_tokens: NonNegativeInt | None = None
    max_completion_tokens: NonNegativeInt | None = None
    # LMDeploy's older bodies send "stop": false (no stop strings); true means the same there
    stop: str | list[str] | bool | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: Seed | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    logit_bias: LogitBias | None = None
    user: str | None = None
    # LMDeploy extras
    top_k: NonNegativeInt = 40
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    repetition_penalty: RepetitionPenalty = 1.0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    min_new_tokens: NonNegativeInt | None = None
    session_id: SessionId | None = None
    end_session: bool = False  # end the session (free its KV cache) when this request ends
    renew_session: bool = False  # LMDeploy's legacy field, which it ignores too


class TopLogprob(msgspec.Struct, kw_only=True):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(msgspec.Struct, kw_only=True):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(msgspec.Struct, kw_only=True):
    content: list[TokenLogprob] | None = None


class AssistantMessage(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(msgspec.Struct, kw_only=True):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionResponse(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatStreamChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: DeltaMessage
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatStreamChoice]
    usage: Usage | None = None
