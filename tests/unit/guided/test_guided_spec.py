"""response_format spellings -> one GrammarSpec; malformed ones name the field."""
from __future__ import annotations

import json

import pytest

from lmdeploy_sdk import GenerationConfig
from lmdeploy_sdk.guided import grammar_spec

SCHEMA = {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}}}


@pytest.mark.parametrize("fmt", [None, {"type": "text"}])
def test_text_is_no_constraint(fmt):
    assert grammar_spec(fmt) is None


def test_json_object_is_any_object():
    spec = grammar_spec({"type": "json_object"})
    assert spec.kind == "json_schema" and json.loads(spec.source) == {"type": "object"}


def test_json_schema_keeps_key_order_and_strict():
    spec = grammar_spec({"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA, "strict": True}})
    assert spec.kind == "json_schema" and spec.strict and spec.label == "json_schema 'p'"
    assert list(json.loads(spec.source)["properties"]) == ["b", "a"]  # properties are written in this order
    assert not grammar_spec({"type": "json_schema", "json_schema": {"schema": SCHEMA}}).strict


@pytest.mark.parametrize("fmt, kind, source", [
    ({"type": "regex_schema", "regex_schema": "a+"}, "regex", "a+"),  # LMDeploy's spelling
    ({"type": "regex", "regex": "b+"}, "regex", "b+"),
    ({"type": "grammar", "grammar": 'start: "x"'}, "lark", 'start: "x"'),
])
def test_regex_and_grammar(fmt, kind, source):
    spec = grammar_spec(fmt)
    assert (spec.kind, spec.source) == (kind, source)


@pytest.mark.parametrize("fmt, match", [
    ("json", "must be a dict"),
    ({"type": "yaml"}, r"type 'yaml' is not supported; use one of"),
    ({"type": "json_schema"}, "needs 'json_schema'"),
    ({"type": "json_schema", "json_schema": {"schema": [1]}}, "schema must be a JSON schema object"),
    ({"type": "json_schema", "json_schema": {"schema": {}, "strict": "yes"}}, "strict must be"),
    ({"type": "regex_schema"}, "needs 'regex_schema'"),
    ({"type": "grammar", "grammar": ""}, "needs 'grammar'"),
])
def test_malformed_formats_say_what_is_wrong(fmt, match):
    with pytest.raises(ValueError, match=match):
        grammar_spec(fmt)


def test_generation_config_checks_response_format_and_logit_bias():
    with pytest.raises(ValueError, match="not supported"):
        GenerationConfig(response_format={"type": "xml"})
    with pytest.raises(ValueError, match="logit_bias"):
        GenerationConfig(logit_bias={"5": 1.0})
    with pytest.raises(ValueError, match="logit_bias=200"):
        GenerationConfig(logit_bias={5: 200})
    assert GenerationConfig(logit_bias={5: -100}).logit_bias == {5: -100}
