"""Strict JSON types for request bodies.

Litestar converts bodies in msgspec's lax mode, which turns "1" into 1 and 0 into
False. The API takes JSON types as the schema states them, so handlers re-decode
the raw body strictly (msgspec; cheap next to generation) and use that value.
"""
from __future__ import annotations

import re
from typing import TypeVar

import msgspec
from litestar import Request

from lmdeploy_sdk.server.errors import APIError

T = TypeVar("T")

_PATH = re.compile(r"at `\$\.?([^`]*)`")


async def strict_body(request: Request, body_type: type[T]) -> T:
    try:
        return msgspec.json.decode(await request.body(), type=body_type)
    except msgspec.ValidationError as e:
        found = _PATH.search(str(e))
        param = found.group(1).split("[")[0].split(".")[0] if found and found.group(1) else None
        raise APIError(400, str(e), param=param, code="invalid_request") from None
    except msgspec.DecodeError as e:
        raise APIError(400, f"JSON is malformed: {e}", code="invalid_json") from None
