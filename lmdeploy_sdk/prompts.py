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


def is_image_tuple(x: Any) -> bool:
    """LMDeploy's (prompt, image) / (prompt, [images]) form."""
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) and not isinstance(x[1], (int, float))


def _is_prompt(x: Any) -> bool:
    return isinstance(x, str) or is_messages(x) or is_token_ids(x) or is_image_tuple(x)


def split_batch(prompts: Any) -> tuple[list[Prompt], bool]:
    """(list of single prompts, whether the input was one prompt). Raises TypeError on other shapes.

    A prompt is a str, a conversation (list of message dicts), token ids (list of ints,
    taken as they are: no chat template) or (text, image or [images]).
    """
    if _is_prompt(prompts):
        return [prompts], True
    if isinstance(prompts, (list, tuple)):
        items = list(prompts)
        for i, p in enumerate(items):
            if not _is_prompt(p):
                raise TypeError(
                    f"prompt {i} is a {type(p).__name__}; expected a str, a list of message dicts, "
                    "a list of token ids or a (text, images) tuple"
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


def with_images(prompts: Any, images: Any) -> Any:
    """`pipe(prompt, images=...)`: the images go with the one text prompt."""
    if images is None:
        return prompts
    if isinstance(prompts, str):
        return (prompts, images)
    raise ValueError("images= goes with one text prompt; for a batch pass [(prompt, images), ...], and in "
                     "messages use image_url content parts")


def encode_inputs(tokenizer: Tokenizer, vision: Any, prompt: Any, do_preprocess: bool = True,
                  max_tokens: int | None = None) -> tuple[list[int], list]:
    """(token ids, embedding spans) of one prompt; `vision` is the model's VisionModel or None
    (a text-only model); an image prompt longer than max_tokens is refused before its images are
    encoded. Raises ValueError."""
    from lmdeploy_sdk.vl.inputs import VisionPrompt, has_image_parts, vision_prompt

    if vision is None:
        if is_image_tuple(prompt) or has_image_parts(prompt):
            raise ValueError("this prompt has images, but the model is text-only (images need a "
                             "vision-language model such as llava)")
        return encode(tokenizer, prompt, do_preprocess), []
    image_prompt = vision_prompt(prompt)
    if image_prompt is None:
        if is_token_ids(prompt):
            return list(prompt), []
        if isinstance(prompt, str) and not do_preprocess:
            return tokenizer.encode_prompt(prompt, do_preprocess=False), []
        messages = prompt if is_messages(prompt) else [{"role": "user", "content": prompt}]
        image_prompt = VisionPrompt(messages, [])
    return vision.encode(image_prompt, do_preprocess, max_tokens)
