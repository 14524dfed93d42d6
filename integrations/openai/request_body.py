"""Keyword arguments of `create(...)` -> the server's request struct, validated as the server does.

The arguments go through the same strict JSON decoding as an HTTP body, so a
request the server rejects with 400 is rejected here with `openai.BadRequestError`,
and defaults (temperature, top_k, ...) are the server's.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import msgspec
import openai
import pydantic

from lmdeploy_sdk.integrations.openai.api_errors import status_error
from lmdeploy_sdk.server.errors import APIError
from lmdeploy_sdk.server.strict_body import convert_strictly

T = TypeVar("T")

# Arguments of the `openai` client that shape the HTTP call; there is none in-process.
TRANSPORT_ARGS = ("extra_headers", "extra_query", "timeout")


def _is_sentinel(value: Any) -> bool:
    """openai's "argument not given" markers (NOT_GIVEN / omit) mean: leave the field out."""
    return isinstance(value, (openai.NotGiven, getattr(openai, "Omit", openai.NotGiven)))


def to_json_value(value: Any) -> Any:
    """Plain JSON data from what users pass: TypedDicts, pydantic models (e.g. a previous
    response's message), tuples and other iterables."""
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, Mapping):
        return {k: to_json_value(v) for k, v in value.items() if not _is_sentinel(v)}
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return value
    if isinstance(value, Iterable):
        return [to_json_value(v) for v in value]
    return value


def request_body(params: dict[str, Any]) -> dict[str, Any]:
    """The JSON body the `openai` client would send for these create() arguments."""
    params = dict(params)
    extra_body = params.pop("extra_body", None) or {}
    for name in TRANSPORT_ARGS:
        params.pop(name, None)
    body = to_json_value(params)
    body.update(to_json_value(extra_body))
    return body


def parse_request(params: dict[str, Any], body_type: type[T], path: str) -> T:
    """Decode strictly into body_type; a bad field becomes openai.BadRequestError naming it."""
    body = request_body(params)
    try:
        raw = msgspec.json.encode(body)
    except (TypeError, msgspec.EncodeError) as e:
        raise status_error(400, f"request is not JSON-serializable: {e}", path, code="invalid_json") from None
    try:
        return convert_strictly(msgspec.json.decode(raw), body_type)
    except APIError as e:
        raise status_error(e.status, e.message, path, e.param, e.code) from None
