"""How the server reads request bodies: only as JSON, and never into a 500.

- Content-Type must be JSON (`application/json`, or any `+json` type). `text/plain`,
  form and multipart bodies are what any web page may send cross-site without a CORS
  preflight; refusing them (415) keeps pages from driving a keyless server.
- JSON nested deeper than the parser can follow is a 400 that names the top-level
  field holding it, not a RecursionError.
"""
from __future__ import annotations

import json
import re
from typing import Any

from litestar import Request
from litestar.exceptions import SerializationException

from lmdeploy_sdk.server.errors import APIError
from lmdeploy_sdk.server.offload import in_worker

# Below msgspec's own limit (about 1000 levels, from Python's recursion limit): where the
# scan for the offending field stops.
_SCAN_DEPTH = 256
# A JSON string (escapes included) or a bracket.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def is_json_media_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def deep_field(body: bytes, limit: int = _SCAN_DEPTH) -> str | None:
    """The top-level key whose value nests deeper than `limit` (None: the body itself)."""
    depth, last_string, key = 0, None, None
    for m in _TOKENS.finditer(body):
        token = m.group()
        if token[0] == 0x22:  # a string; at depth 1 the last one before a value is its key
            if depth == 1:
                last_string = token
        elif token in (b"[", b"{"):
            if depth == 1:
                key = last_string
            depth += 1
            if depth > limit:
                try:
                    return json.loads(key) if key is not None else None
                except ValueError:
                    return None
        else:
            depth -= 1
    return None


class JSONRequest(Request):
    """Litestar's Request, with the checks above on the way to `json()`."""

    async def json(self) -> Any:
        content_type = self.headers.get("content-type")
        if not is_json_media_type(content_type):
            raise APIError(415, f"the body must be JSON: send 'Content-Type: application/json' (got {content_type!r})",
                           code="unsupported_media_type")
        try:
            return await super().json()
        except SerializationException as e:
            raise APIError(400, f"JSON is malformed: {e.detail}", code="invalid_json") from None
        except RecursionError:
            field = await in_worker(deep_field, await self.body())
            where = f" in field {field!r}" if field else ""
            raise APIError(400, f"the JSON body nests too deeply{where}", param=field,
                           code="json_too_deep") from None
