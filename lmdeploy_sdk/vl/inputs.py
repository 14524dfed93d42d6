"""The prompt forms that carry images, as LMDeploy's users write them, normalized to OpenAI-style
messages whose image parts are `{"type": "image"}` plus the images in order.

    pipe(("describe this", "cat.jpg"))                 # LMDeploy's tuple form
    pipe([("compare", [img1, img2]), ("hi", img3)])    # a batch of them
    pipe("describe this", images="cat.jpg")            # the tutorials' keyword
    pipe([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:..."}},
                                       {"type": "text", "text": "describe"}]}])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from lmdeploy_sdk.prompts import is_image_tuple
from lmdeploy_sdk.vl.image_io import load_image

_IMAGE_PART_TYPES = ("image_url", "image", "image_data")


@dataclass
class VisionPrompt:
    messages: list[dict[str, Any]]
    images: list[Image.Image]


def has_image_parts(messages: Any) -> bool:
    return isinstance(messages, list) and any(
        isinstance(m, dict) and isinstance(m.get("content"), list)
        and any(isinstance(p, dict) and p.get("type") in _IMAGE_PART_TYPES for p in m["content"])
        for m in messages)


def _as_list(images: Any) -> list:
    return list(images) if isinstance(images, (list, tuple)) else [images]


def user_turn(text: str, images: Any) -> dict[str, Any]:
    """(text, image or [images]) as one user message with `image` parts (images not loaded yet),
    as a chat session keeps it."""
    return {"role": "user", "content": [{"type": "image", "image": i} for i in _as_list(images)]
            + [{"type": "text", "text": text}]}


def from_text(text: str, images: Any) -> VisionPrompt:
    """One user turn: the images first, then the text (LLaVA's training layout)."""
    loaded = [load_image(i) for i in _as_list(images)]
    content = [{"type": "image"} for _ in loaded] + [{"type": "text", "text": text}]
    return VisionPrompt([{"role": "user", "content": content}], loaded)


def _image_of(part: dict, where: str) -> Image.Image:
    kind = part["type"]
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
    elif kind == "image":
        url = part.get("image", part.get("url"))
    else:  # LMDeploy's {"type": "image_data", "image_data": {"data": <PIL image>}}
        data = part.get("image_data")
        url = data.get("data") if isinstance(data, dict) else data
    if url is None:
        raise ValueError(f"{where}: a {kind!r} part without its image")
    try:
        return load_image(url)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def from_messages(messages: list[dict[str, Any]]) -> VisionPrompt:
    """Image parts (image_url, image, image_data) loaded and replaced by {"type": "image"}."""
    out, images = [], []
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            out.append(message)
            continue
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in _IMAGE_PART_TYPES:
                images.append(_image_of(part, f"message {i} content part {j}"))
                parts.append({"type": "image"})
            else:
                parts.append(part)
        out.append({**message, "content": parts})
    return VisionPrompt(out, images)


def vision_prompt(prompt: Any) -> VisionPrompt | None:
    """The VisionPrompt of a prompt that carries images, else None."""
    if is_image_tuple(prompt):
        return from_text(prompt[0], prompt[1])
    if has_image_parts(prompt):
        return from_messages(prompt)
    return None
