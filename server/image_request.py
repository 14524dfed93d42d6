"""Image parts of chat messages (`{"type": "image_url", "image_url": {"url": ...}}`): what the
server accepts, and the 400s for what it does not (a text-only model, a URL it will not fetch,
an image it cannot read), each naming the part."""
from __future__ import annotations

from typing import Any

from lmdeploy_sdk.server.invalid_request import InvalidRequest

# Where an image_url may point: inline data, or a web address the server fetches (as OpenAI's
# API does). Local paths and other schemes are refused: a client must not read the server's files.
_FETCHABLE = ("data:", "http://", "https://")


def content_part_dict(part: Any) -> dict[str, Any]:
    """A ContentPart as the chat template (or the vision processor) wants it."""
    if part.type == "image_url":
        return {"type": "image_url", "image_url": {"url": part.image_url.url if part.image_url else None}}
    return {"type": part.type, "text": part.text}


def _image_parts(messages: list[dict[str, Any]]):
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if part.get("type") == "image_url":
                    yield i, j, part


def refuse_images(messages: list[dict[str, Any]], field: str = "messages", first: int = 0) -> None:
    """A text-only model's chat: any image part is a 400 (`field[i]`, counting from message `first`)."""
    for i, j, _ in _image_parts(messages):
        raise InvalidRequest("this model is text-only: image_url parts need a vision-language model (e.g. llava)",
                             f"{field}[{i - first}].content[{j}]", "image_input_not_supported")


def image_messages(messages: list[dict[str, Any]], field: str = "messages", first: int = 0):
    """The VisionPrompt of a chat (images loaded); InvalidRequest naming the first bad part."""
    from lmdeploy_sdk.vl.inputs import from_messages

    for i, j, part in _image_parts(messages):
        url = part["image_url"]["url"]
        if not isinstance(url, str) or not url.startswith(_FETCHABLE):
            shown = url if isinstance(url, str) and len(url) <= 60 else f"{str(url)[:57]}..."
            raise InvalidRequest(f"image_url {shown!r}: give a data: URL (base64) or an http(s) URL",
                                 f"{field}[{i - first}].content[{j}].image_url", "invalid_image_url")
    try:
        return from_messages(messages)
    except ValueError as e:
        raise InvalidRequest(str(e), field, "invalid_image") from None


def encode_with_images(vision: Any, messages: list[dict[str, Any]], session_len: int, field: str = "messages",
                       first: int = 0) -> tuple[list[int], list]:
    """(token ids, image spans) of a chat on a vision-language model; the 400s above, and
    context_length_exceeded when its images make it too long (before the vision tower runs).
    Blocking (it may fetch and encode images): run it in a worker."""
    prompt = image_messages(messages, field, first)
    try:
        return vision.encode(prompt, max_tokens=session_len)
    except ValueError as e:
        code = "context_length_exceeded" if "more than session_len" in str(e) else "invalid_image"
        raise InvalidRequest(str(e), field, code) from None
