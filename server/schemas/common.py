"""Bodies shared by several endpoints: the error envelope and token usage."""
from __future__ import annotations

from typing import Literal

import msgspec

# What the engine says about why a choice ended, as the API reports it ('abort' is LMDeploy's).
FinishReason = Literal["stop", "length", "tool_calls", "abort"]


class ErrorDetail(msgspec.Struct, kw_only=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct, kw_only=True):
    """OpenAI's error envelope: what every non-2xx answer carries (and a failed SSE stream's last event)."""

    error: ErrorDetail


class PromptTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


def make_usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
    )
