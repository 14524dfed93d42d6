"""OpenAI tool definitions -> the JSON schema of one call to them.

Shared by every format's grammar: a call is `{"name": <const>, <args key>: <parameters>}`
with exactly those two keys, in that order.
"""
from __future__ import annotations

import copy
from typing import Any

__all__ = ["tool_function", "tool_names", "arguments_schema", "call_schema", "selected_tools"]

_DEF_KEYS = ("$defs", "definitions")


def tool_function(tool: dict) -> dict:
    """The `function` part of an OpenAI tool (a bare function dict is accepted too)."""
    fn = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError(f"a tool must be {{'type': 'function', 'function': {{'name': str, ...}}}}, got {tool!r}")
    return fn


def tool_names(tools: list[dict]) -> list[str]:
    """The function names of the tools, in order."""
    return [tool_function(t)["name"] for t in tools]


def selected_tools(tools: list[dict], force: str | None) -> list[dict]:
    """The tools a call may name: all of them, or only `force` (a named tool_choice)."""
    if not tools:
        raise ValueError("tool calls need at least one tool")
    fns = [tool_function(t) for t in tools]
    if force is None:
        return fns
    chosen = [fn for fn in fns if fn["name"] == force]
    if not chosen:
        raise ValueError(f"tool_choice names function {force!r}, which is not among the tools {tool_names(tools)}")
    return chosen[:1]


def arguments_schema(fn: dict) -> dict:
    """The schema the arguments must match: the tool's `parameters`, an empty object if it has none."""
    params = fn.get("parameters")
    if not params:  # OpenAI: omitting parameters defines a function with an empty parameter list
        return {"type": "object", "properties": {}, "additionalProperties": False}
    if not isinstance(params, dict):
        raise ValueError(f"function {fn['name']!r}: 'parameters' must be a JSON schema object, got {params!r}")
    params = _closed(copy.deepcopy(params))
    params.setdefault("type", "object")
    return params


def _closed(node: Any) -> Any:
    """Objects that list their properties get `additionalProperties: false` unless they say
    otherwise (in place): a forced call then carries only the declared arguments, as OpenAI's
    strict mode asks, and a small model cannot pad it with copies of the schema's own keys."""
    if isinstance(node, list):
        for n in node:
            _closed(n)
    elif isinstance(node, dict):
        for v in node.values():
            _closed(v)
        if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
            node["additionalProperties"] = False
    return node


def _rename_refs(node: Any, prefix: str) -> Any:
    """Point `#/$defs/X` and `#/definitions/X` refs at the hoisted `#/$defs/<prefix>X`."""
    if isinstance(node, list):
        return [_rename_refs(n, prefix) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rename_refs(v, prefix) for k, v in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str):
        for key in _DEF_KEYS:
            if ref.startswith(f"#/{key}/"):
                out["$ref"] = f"#/$defs/{prefix}{ref[len(key) + 3:]}"
    return out


def call_schema(fn: dict, args_key: str, prefix: str = "") -> tuple[dict, dict]:
    """(the schema of one call to fn, the `$defs` its parameters need at the document root).

    Parameters often carry `$defs` (pydantic models); nested under a call their `#/$defs/...`
    refs would miss, so they are hoisted to the root under names starting with `prefix`.
    """
    params = arguments_schema(fn)
    defs: dict = {}
    for key in _DEF_KEYS:
        for name, sub in (params.pop(key, None) or {}).items():
            defs[prefix + name] = sub
    params = _rename_refs(params, prefix)
    defs = {k: _rename_refs(v, prefix) for k, v in defs.items()}
    schema = {
        "type": "object",
        "properties": {"name": {"const": fn["name"]}, args_key: params},
        "required": ["name", args_key],
        "additionalProperties": False,
    }
    return schema, defs
