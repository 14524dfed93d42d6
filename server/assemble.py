"""Engine `Response` deltas -> OpenAI choices, logprobs and usage.

Kept apart from the routes so the in-process OpenAI shim can build the same
bodies from the same engine outputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from lmdeploy_sdk.messages import Response
from lmdeploy_sdk.server.schemas.chat import ChoiceLogprobs, TokenLogprob, TopLogprob
from lmdeploy_sdk.server.schemas.common import Usage, make_usage
from lmdeploy_sdk.server.schemas.completions import CompletionLogprobs


class TokenDecoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


@dataclass
class ChoiceAccumulator:
    """Everything one choice produced so far, for a non-streamed body or the final usage."""

    text_parts: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] = field(default_factory=list)
    generated: int = 0
    cached_tokens: int = 0
    finish_reason: str | None = None

    def add(self, resp: Response) -> None:
        self.text_parts.append(resp.text)
        self.token_ids.extend(resp.token_ids)
        if resp.logprobs:
            self.logprobs.extend(resp.logprobs)
        self.generated = max(self.generated, resp.generate_token_len)
        self.cached_tokens = resp.cached_tokens
        if resp.finish_reason is not None:
            self.finish_reason = resp.finish_reason

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


def token_text(tokenizer: TokenDecoder, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def _top(entries: dict[int, float], k: int) -> list[tuple[int, float]]:
    return sorted(entries.items(), key=lambda kv: kv[1], reverse=True)[:k]


def chat_logprobs(
    tokenizer: TokenDecoder, token_ids: list[int], entries: list[dict[int, float]], top_k: int
) -> ChoiceLogprobs:
    """entries[i] holds the sampled token's logprob and the top alternatives of step i."""
    content = []
    for tok, lp in zip(token_ids, entries):
        text = token_text(tokenizer, tok)
        top = [
            TopLogprob(token=(t := token_text(tokenizer, i)), logprob=v, bytes=list(t.encode()))
            for i, v in _top(lp, top_k)
        ]
        content.append(TokenLogprob(token=text, logprob=lp[tok], bytes=list(text.encode()), top_logprobs=top))
    return ChoiceLogprobs(content=content)


def completion_logprobs(
    tokenizer: TokenDecoder,
    token_ids: list[int],
    entries: list[dict[int, float]],
    top_k: int,
    text_offset: int = 0,
) -> CompletionLogprobs:
    """The legacy completions layout; offsets count characters from text_offset."""
    tokens, token_lps, tops, offsets = [], [], [], []
    for tok, lp in zip(token_ids, entries):
        text = token_text(tokenizer, tok)
        tokens.append(text)
        token_lps.append(lp[tok])
        tops.append({token_text(tokenizer, i): v for i, v in _top(lp, top_k)} if top_k else None)
        offsets.append(text_offset)
        text_offset += len(text)
    return CompletionLogprobs(tokens=tokens, token_logprobs=token_lps, top_logprobs=tops, text_offset=offsets)


def plan_usage(prompt_tokens: int, choices: list[ChoiceAccumulator], first_choice_of_prompt: list[int]) -> Usage:
    """Prompt tokens count once per prompt; cached tokens are those of each prompt's first choice."""
    cached = sum(choices[i].cached_tokens for i in first_choice_of_prompt)
    return make_usage(prompt_tokens, sum(c.generated for c in choices), cached)


def first_choices(prompt_of_choice: list[int]) -> list[int]:
    """Index of the first choice of each prompt."""
    seen: dict[int, int] = {}
    for i, p in enumerate(prompt_of_choice):
        seen.setdefault(p, i)
    return list(seen.values())
