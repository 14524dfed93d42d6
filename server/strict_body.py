"""Strict JSON types for request bodies.

Litestar converts bodies in msgspec's lax mode, which turns "1" into 1 and 0 into
False. The API takes JSON types as the schema states them, so handlers convert the
decoded body again, strictly, and use that value. One leniency JSON Schema itself
has: a number with no fractional part (`1.0`) is an integer.
"""
from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import SerializationException

from lmdeploy_sdk.server.errors import APIError

T = TypeVar("T")

_PATH = re.compile(r"at `\$([^`]*)`")
_STEP = re.compile(r"\.([A-Za-z_][\w]*)|\[(\d+)\]")
_MAX_FIXES = 64  # integral floats turned into ints before giving up


async def strict_body(request: Request, body_type: type[T]) -> T:
    try:
        body = await request.json()
    except SerializationException as e:  # a plain Request (JSONRequest raises APIError itself)
        raise APIError(400, f"JSON is malformed: {e.detail}", code="invalid_json") from None
    return convert_strictly(body, body_type)


def convert_strictly(body: Any, body_type: type[T]) -> T:
    for _ in range(_MAX_FIXES):
        try:
            return msgspec.convert(body, type=body_type, strict=True)
        except msgspec.ValidationError as e:
            if not _int_for_integral_float(body, str(e)):
                raise APIError(400, str(e), param=_param(str(e)), code="invalid_request") from None
    raise APIError(400, "too many numbers written as floats where integers are expected", code="invalid_request")


def _param(message: str) -> str | None:
    """The top-level field an error is about: '$.messages[0].role' -> 'messages'."""
    found = _PATH.search(message)
    step = _STEP.match(found.group(1)) if found else None
    return step.group(1) if step is not None else None


def _int_for_integral_float(body: Any, message: str) -> bool:
    """If `message` is msgspec's "Expected `int`, got `float`" about a float like 1.0, replace
    that float in `body` with the int it equals; False when there is nothing to fix."""
    found = _PATH.search(message)
    if found is None or not message.startswith("Expected `int") or "got `float`" not in message:
        return False
    steps = [(name, int(index) if index else None) for name, index in _STEP.findall(found.group(1))]
    if not steps or "".join(f".{n}" if n else f"[{i}]" for n, i in steps) != found.group(1):
        return False  # a path we cannot follow (e.g. a dict key with odd characters)
    parent = body
    for name, index in steps[:-1]:
        parent = parent[name] if name else parent[index]
    name, index = steps[-1]
    key = name if name else index
    value = parent[key]
    if not isinstance(value, float) or not value.is_integer():
        return False
    parent[key] = int(value)
    return True
