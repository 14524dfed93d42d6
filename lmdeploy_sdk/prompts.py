"""Recognise the prompt forms users pass and turn them into token ids."""
from __future__ import annotations

from typing import Any, Union

from lmdeploy_sdk.tokenizer import Tokenizer

Messages = list[dict[str, Any]]
Prompt = Union[str, Messages, list[int]]


def is_messages(x: Any) -> bool:
    return isinstance(x, list) and len(x) > 0 and all(isinstance(m, dict) for m in x)


def is_token_ids(x: Any) -> bool:
    return isinstance(x, list) and len(x) > 0 and all(isinstance(t, int) and not isinstance(t, bool) for t in x)


def split_batch(prompts: Any) -> tuple[list[Prompt], bool]:
    """(list of single prompts, whether the input was one prompt). Raises TypeError on other shapes.

    A prompt is a str, a conversation (list of message dicts) or token ids (list of ints,
    taken as they are: no chat template).
    """
    if isinstance(prompts, str) or is_messages(prompts) or is_token_ids(prompts):
        return [prompts], True
    if isinstance(prompts, (list, tuple)):
        items = list(prompts)
        for i, p in enumerate(items):
            if not (isinstance(p, str) or is_messages(p) or is_token_ids(p)):
                raise TypeError(
                    f"prompt {i} is a {type(p).__name__}; expected a str, a list of message dicts "
                    "or a list of token ids"
                )
        return items, False
    raise TypeError(
        "prompts must be a str, a list of message dicts, a list of token ids or a list of those; "
        f"got {type(prompts).__name__}"
    )


def encode(tokenizer: Tokenizer, prompt: Prompt, do_preprocess: bool = True) -> list[int]:
    """Token ids of one prompt; a list of ints is taken as ids already. Raises ValueError."""
    if is_token_ids(prompt):
        return list(prompt)
    if isinstance(prompt, str) or isinstance(prompt, list):
        return tokenizer.encode_prompt(prompt, do_preprocess=do_preprocess)
    raise ValueError(f"unsupported prompt type {type(prompt).__name__}")
