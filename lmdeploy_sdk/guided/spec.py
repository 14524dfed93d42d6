"""`response_format` as users write it (OpenAI's and LMDeploy's spellings) -> one GrammarSpec.

Accepted forms:
- `{"type": "text"}` or None: no constraint.
- `{"type": "json_object"}`: any JSON object.
- `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": bool}}`
  (OpenAI; LMDeploy writes the same). strict=True refuses schema keywords the matcher cannot
  enforce; otherwise they are ignored with a warning in the log.
- `{"type": "regex_schema", "regex_schema": "..."}` (LMDeploy); `{"type": "regex", "regex": "..."}`.
- `{"type": "grammar", "grammar": "<Lark grammar>"}` (our extension; llguidance's Lark dialect,
  which also embeds JSON schemas with `%json {...}`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["json_schema", "regex", "lark"]

# The text a request's output must match; `label` names it in messages and logs.
ANY_JSON_OBJECT = {"type": "object"}


@dataclass(frozen=True)
class GrammarSpec:
    kind: Kind
    source: str  # JSON schema text, regex, or Lark grammar
    label: str
    strict: bool = True  # json_schema: refuse keywords that cannot be enforced


def _text_field(fmt: dict[str, Any], key: str) -> str:
    value = fmt.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"response_format of type {fmt['type']!r} needs '{key}': a non-empty str, got {value!r}")
    return value


def _json_schema_spec(fmt: dict[str, Any]) -> GrammarSpec:
    inner = fmt.get("json_schema")
    if not isinstance(inner, dict):
        raise ValueError(
            "response_format of type 'json_schema' needs 'json_schema': "
            f"{{'name': ..., 'schema': {{...}}}}, got {inner!r}"
        )
    schema = inner.get("schema", ANY_JSON_OBJECT)
    if isinstance(schema, bool) or not isinstance(schema, dict):
        raise ValueError(f"response_format.json_schema.schema must be a JSON schema object, got {schema!r}")
    strict = inner.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise ValueError(f"response_format.json_schema.strict must be true, false or null, got {strict!r}")
    name = inner.get("name", "schema")
    try:
        source = json.dumps(schema, ensure_ascii=False)  # key order kept: properties come in it
    except (TypeError, ValueError) as e:
        raise ValueError(f"response_format.json_schema.schema is not JSON-serializable: {e}") from None
    return GrammarSpec("json_schema", source, f"json_schema {name!r}", strict=bool(strict))


def grammar_spec(response_format: Any) -> GrammarSpec | None:
    """The constraint `response_format` asks for, or None; ValueError naming what is wrong."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise ValueError(f"response_format must be a dict such as {{'type': 'json_object'}}, got {response_format!r}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return GrammarSpec("json_schema", json.dumps(ANY_JSON_OBJECT), "json_object")
    if kind == "json_schema":
        return _json_schema_spec(response_format)
    if kind in ("regex_schema", "regex"):
        return GrammarSpec("regex", _text_field(response_format, kind), "regex")
    if kind == "grammar":
        return GrammarSpec("lark", _text_field(response_format, "grammar"), "grammar")
    raise ValueError(
        f"response_format type {kind!r} is not supported; use one of "
        "'text', 'json_object', 'json_schema', 'regex_schema', 'grammar'"
    )
