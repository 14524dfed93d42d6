"""Grammars (llguidance's Lark dialect) that force the output to be tool calls.

Each format wraps the same JSON-schema rule in its own text; the JSON is pinned to
`json.dumps`'s separators with no free whitespace, so a small model cannot wander
into endless newlines and `render_calls` writes exactly what the grammar accepts.
"""
from __future__ import annotations

import json
from types import MappingProxyType

from lmdeploy_sdk.guided.compiler import json_options
from lmdeploy_sdk.tools.schema import call_schema, selected_tools

__all__ = ["JSON_STYLE", "calls_schema", "json_rule", "lark_literal", "repeated_calls_grammar"]

# The JSON layout response formats use. Not strict (lenient): keywords llguidance does not
# implement (uniqueItems, contains, ...) are ignored rather than failing the request, since tool
# schemas come from users.
JSON_STYLE = MappingProxyType(json_options(strict=False))


def calls_schema(tools: list[dict], force: str | None, args_key: str) -> dict:
    """anyOf over one call schema per allowed tool, with their `$defs` hoisted to the root."""
    options, defs = [], {}
    for i, fn in enumerate(selected_tools(tools, force)):
        schema, tool_defs = call_schema(fn, args_key, prefix=f"tool{i}_")
        options.append(schema)
        defs.update(tool_defs)
    schema = {"anyOf": options}
    if defs:
        schema["$defs"] = defs
    return schema


def json_rule(schema: dict) -> str:
    """A Lark `%json` rule body for schema, in the JSON style render_calls writes."""
    return "%json " + json.dumps({**schema, "x-guidance": dict(JSON_STYLE)}, ensure_ascii=False)


def lark_literal(text: str) -> str:
    """A Lark string literal (JSON string escapes are valid Lark ones)."""
    return json.dumps(text, ensure_ascii=False)


def repeated_calls_grammar(body: str, before: str, after: str, separator: str, parallel: bool) -> str:
    """`before body after`, once or (parallel) one or more times joined by separator."""
    call = " ".join(p for p in (lark_literal(before) if before else "", "body", lark_literal(after) if after else "")
                    if p)
    start = f"call ({lark_literal(separator)} call)*" if parallel else "call"
    return f"%llguidance {{}}\nstart: {start}\ncall: {call}\nbody: {body}\n"
