"""LMDeploy's own endpoints: `/v1/chat/interactive`, `/v1/encode`, `/generate`, `/abort_request`."""
from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from lmdeploy_sdk.server.schemas.chat import ChatMessage, NonNegativeInt, RepetitionPenalty, Seed, SessionId
from lmdeploy_sdk.server.sessions import MAX_SESSION_ID


class InteractiveRequest(msgspec.Struct, kw_only=True):
    """One turn of a stateful chat: the server keeps the conversation and its KV cache.

    interactive_mode=true keeps the session for the next turn; false ends it after this
    turn (an empty prompt with false just ends it). cancel=true stops the session's
    running request. session_id=-1 picks a fresh session (a random id, in the answer).
    """

    prompt: str | list[ChatMessage] = ""
    session_id: Annotated[int, Meta(ge=-1, le=MAX_SESSION_ID)] = -1
    interactive_mode: bool = False
    stream: bool = False
    stop: str | list[str] | None = None
    request_output_len: NonNegativeInt | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.8
    top_k: NonNegativeInt = 40
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 0.8
    repetition_penalty: RepetitionPenalty = 1.0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    seed: Seed | None = None
    cancel: bool = False


class InteractiveResponse(msgspec.Struct, kw_only=True):
    """text: the reply (a delta when streaming); tokens: generated so far; input_tokens:
    this turn's new prompt tokens; history_tokens: the session's length before the turn."""

    text: str
    tokens: int
    input_tokens: int
    history_tokens: int
    finish_reason: Literal["stop", "length", "abort"] | None = None
    session_id: int


class EncodeRequest(msgspec.Struct, kw_only=True):
    input: str | list[str]
    do_preprocess: bool = False
    add_bos: bool = True


class EncodeResponse(msgspec.Struct, kw_only=True):
    """For a list input, input_ids is a list of id lists and length a list of ints."""

    input_ids: list[Any]
    length: int | list[int]


class GenerateRequest(msgspec.Struct, kw_only=True):
    """Raw generation on text or token ids (no chat template unless do_preprocess)."""

    prompt: str | None = None
    input_ids: list[NonNegativeInt] | None = None
    do_preprocess: bool = False
    session_id: SessionId | None = None
    end_session: bool = False  # end the session (free its KV cache) when this request ends
    stream: bool = False
    max_tokens: NonNegativeInt = 128
    stop: str | list[str] | None = None
    stop_token_ids: list[NonNegativeInt] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] = 1.0
    top_k: NonNegativeInt = 0
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    repetition_penalty: RepetitionPenalty = 1.0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    seed: Seed | None = None
    return_logprob: bool = False


class GenerateMeta(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: Literal["stop", "length", "abort"] | None = None
    # (logprob, token id) per generated token, when return_logprob
    output_token_logprobs: list[tuple[float, int]] | None = None


class GenerateResponse(msgspec.Struct, kw_only=True):
    """text and output_ids are deltas when streaming."""

    text: str
    output_ids: list[int]
    meta_info: GenerateMeta


class AbortRequest(msgspec.Struct, kw_only=True):
    """Stop running requests: by the id the API returned, by session, or all of them
    (with API keys: all of the caller's key)."""

    request_id: str | None = None
    session_id: SessionId | None = None
    abort_all: bool = False


class AbortResponse(msgspec.Struct, kw_only=True):
    aborted: int


class EndSessionResponse(msgspec.Struct, kw_only=True):
    session_id: int
    ended: bool


class HealthResponse(msgspec.Struct, kw_only=True):
    status: Literal["ok", "draining"]
