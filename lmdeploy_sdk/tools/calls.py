"""What a parsed tool call is, and how a JSON object the model wrote becomes one.

Every format ends up with the same `{"name": ..., "arguments"|"parameters": ...}`
object; this module is the one place that decides whether such an object is a call.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ParsedCall", "ToolCallParser", "new_call_id", "call_from_object", "call_from_json", "load_json"]

_INVALID = object()


@dataclass(frozen=True)
class ParsedCall:
    """One tool call found in generated text, ready to become an OpenAI `tool_calls` entry."""

    name: str
    arguments: str  # a JSON object as text, e.g. '{"a": 1}'
    id: str  # "call_" + 24 hex chars, fresh per call


class ToolCallParser(Protocol):
    """Splits one generated choice into content and calls as its text streams in.

    One instance per choice: all the state of a half-seen call lives on the instance.
    """

    def feed(self, text: str) -> tuple[str, list[ParsedCall]]:
        """A text delta -> (content that can be shown now, calls completed now)."""
        ...

    def flush(self) -> tuple[str, list[ParsedCall]]:
        """End of output: whatever was held back, as content or calls."""
        ...


def new_call_id() -> str:
    """A fresh OpenAI-style call id, so clients can pair tool results with calls."""
    return f"call_{uuid.uuid4().hex[:24]}"


def load_json(text: str) -> Any:
    """json.loads that never raises on model output; returns a sentinel (not None) on failure."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _INVALID


def _arguments_text(args: Any) -> str | None:
    """Arguments (an object, JSON text of one, or absent) as compact JSON object text."""
    if args is None:
        args = {}
    elif isinstance(args, str):
        args = load_json(args) if args.strip() else {}
    if not isinstance(args, dict):
        return None
    try:
        return json.dumps(args, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN/Infinity are not JSON
        return None


def call_from_object(obj: Any) -> ParsedCall | None:
    """A call from a decoded `{"name": str, "arguments"|"parameters": {...}}`, or None if it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    arguments = _arguments_text(obj["arguments"] if "arguments" in obj else obj.get("parameters"))
    if arguments is None:
        return None
    return ParsedCall(name=obj["name"], arguments=arguments, id=new_call_id())


def call_from_json(text: str) -> ParsedCall | None:
    """A call from JSON text (surrounding whitespace allowed), or None if it is not one."""
    obj = load_json(text.strip())
    return None if obj is _INVALID else call_from_object(obj)
