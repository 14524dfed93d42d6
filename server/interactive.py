"""Stateful chat for `/v1/chat/interactive`: the server keeps each session's conversation
(in its SessionEntry, so the session store bounds them too).

The engine keeps the session's KV cache between turns; each turn sends it the
whole conversation again and the engine prefills only what it has not cached.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmdeploy_sdk.messages import GenerationConfig
from lmdeploy_sdk.server.schemas.native import InteractiveRequest
from lmdeploy_sdk.server.sessions import SessionEntry
from lmdeploy_sdk.server.translate import build_config, fold_seed, message_dicts


@dataclass
class Conversation:
    """messages: every finished turn so far; tokens: the session's length after the last turn."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0


def new_messages(req: InteractiveRequest) -> list[dict[str, Any]]:
    """This turn's messages: a str prompt is one user message; an empty prompt adds none."""
    if isinstance(req.prompt, str):
        return [{"role": "user", "content": req.prompt}] if req.prompt else []
    return message_dicts(req.prompt)


def turn_config(req: InteractiveRequest, prompt_len: int, session_len: int) -> GenerationConfig:
    limit = req.request_output_len if req.request_output_len is not None else max(session_len - prompt_len, 0)
    return build_config(
        max_new_tokens=limit,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        repetition_penalty=req.repetition_penalty,
        ignore_eos=req.ignore_eos,
        skip_special_tokens=req.skip_special_tokens,
        stop=req.stop,
        random_seed=fold_seed(req.seed),
    )


def record_turn(
    entry: SessionEntry | None,
    messages: list[dict[str, Any]],
    reply: str,
    total_tokens: int,
    finish_reason: str | None,
) -> None:
    """Keep a finished turn in its session (an aborted one leaves the conversation as it was;
    a session that ended meanwhile keeps nothing)."""
    if entry is not None and finish_reason in ("stop", "length"):
        entry.conversation = Conversation(messages + [{"role": "assistant", "content": reply}], total_tokens)
