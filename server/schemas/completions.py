"""`/v1/completions` and `/v1/models` bodies (OpenAI's shapes plus LMDeploy's extras)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from lmdeploy_sdk.server.schemas.chat import (
    MAX_N, LogitBias, NonNegativeInt, RepetitionPenalty, ResponseFormat, Seed, SessionId,
)
from lmdeploy_sdk.server.schemas.common import FinishReason, StreamOptions, Usage


class CompletionRequest(msgspec.Struct, kw_only=True):
    model: str
    # A string, a list of strings, a list of token ids, or a list of token-id lists
    # (checked when translated: msgspec unions hold one array type).
    prompt: str | list[Any]
    suffix: str | None = None
    max_tokens: NonNegativeInt | None = 16
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] = 1.0
    n: Annotated[int, Meta(ge=1, le=MAX_N)] = 1
    best_of: Annotated[int, Meta(ge=1, le=MAX_N)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    echo: bool = False
    stop: str | list[str] | None = None
    seed: Seed | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: LogitBias | None = None
    user: str | None = None
    # guided decoding, as on chat completions (vLLM's servers take it here too)
    response_format: ResponseFormat | None = None
    # LMDeploy extras
    top_k: NonNegativeInt = 40
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    repetition_penalty: RepetitionPenalty = 1.0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    min_new_tokens: NonNegativeInt | None = None
    session_id: SessionId | None = None
    end_session: bool = False  # end the session (free its KV cache) when this request ends


class CompletionLogprobs(msgspec.Struct, kw_only=True):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(msgspec.Struct, kw_only=True):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None


class CompletionResponse(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(msgspec.Struct, kw_only=True):
    """A streamed piece; OpenAI names its object `text_completion` too."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lmdeploy-sdk"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelCard]
