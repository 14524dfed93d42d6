"""Each format's call grammar, compiled by llguidance on the real SmolLM2 tokenizer: rendered calls
are accepted token by token, invalid ones are rejected, and the format's parser reads them back."""
from __future__ import annotations

import json

import pytest

from lmdeploy_sdk.tools import FORMATS, split_calls
from lmdeploy_sdk.tools.base import call_json

llguidance = pytest.importorskip("llguidance", reason="call grammars are compiled by llguidance")
import llguidance.hf  # noqa: E402
from llguidance import LLMatcher  # noqa: E402

FILTER = {"type": "object", "properties": {"lang": {"type": "string"}}, "required": ["lang"],
          "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "noop"}},
    {"type": "function", "function": {  # pydantic-style: nested model under $defs
        "name": "search", "parameters": {
            "properties": {"query": {"type": "string"}, "filter": {"$ref": "#/$defs/Filter"},
                           "limit": {"oneOf": [{"type": "integer"}, {"type": "null"}]},
                           "tags": {"type": "array", "uniqueItems": True}},  # not enforced: ignored
            "required": ["query", "filter"], "$defs": {"Filter": FILTER}}}},
]


def call(name: str, **args) -> dict:
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


WEATHER = call("get_weather", city="Paris é 東京", days=3, unit="c")
NOOP = call("noop")
SEARCH = call("search", query="llm", filter={"lang": "en"}, limit=None)


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    import transformers

    hf = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    return hf, llguidance.hf.from_tokenizer(hf)


def grammar_text(fmt, calls: list[dict]) -> str:
    """What the grammar makes the model write (internlm2's grammar skips the special-token tags)."""
    if fmt.name == "internlm2":
        return "\n".join(call_json(c, "parameters") for c in calls)
    return fmt.render_calls(calls)


def accepts(tok, grammar: str, text: str) -> bool:
    hf, lltok = tok
    matcher = LLMatcher(lltok, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return matcher.consume_tokens(hf.encode(text, add_special_tokens=False)) and matcher.is_accepting()


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("force, parallel", [(None, False), (None, True), ("search", False)])
def test_grammar_compiles(tok, name, force, parallel):
    grammar = FORMATS[name]().call_grammar(TOOLS, force, parallel)
    assert LLMatcher.validate_grammar(LLMatcher.grammar_from_lark(grammar), tok[1]) == ""


@pytest.mark.parametrize("name", list(FORMATS))
def test_valid_calls_are_accepted_and_parse_back(tok, name):
    fmt = FORMATS[name]()
    for calls, parallel, force in [([WEATHER], False, None), ([NOOP], False, None), ([SEARCH], False, "search"),
                                   ([WEATHER, SEARCH, NOOP], True, None), ([NOOP], True, None)]:
        grammar = fmt.call_grammar(TOOLS, force, parallel)
        texts = {grammar_text(fmt, calls), fmt.render_calls(calls)}
        assert accepts(tok, grammar, grammar_text(fmt, calls)), (calls, grammar)
        for text in texts:
            content, parsed = split_calls(fmt, text)
            assert content == ""
            assert [(c.name, json.loads(c.arguments)) for c in parsed] == [
                (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("case, calls, force, parallel", [
    ("wrong name", [call("get_weathr", city="P")], None, False),
    ("wrong type", [call("get_weather", city=3)], None, False),
    ("bad enum", [call("get_weather", city="P", unit="k")], None, False),
    ("missing required", [call("get_weather", days=1)], None, False),
    ("extra property", [call("get_weather", city="P", extra=1)], None, False),
    ("args for a tool without parameters", [call("noop", a=1)], None, False),
    ("bad $ref'd value", [call("search", query="q", filter={"lang": 1})], None, False),
    ("bad oneOf value", [call("search", query="q", filter={"lang": "en"}, limit="x")], None, False),
    ("not the forced tool", [WEATHER], "noop", False),
    ("two calls, not parallel", [NOOP, NOOP], None, False),
    ("no call", [], None, True),
])
def test_invalid_calls_are_rejected(tok, name, case, calls, force, parallel):
    fmt = FORMATS[name]()
    text = grammar_text(fmt, calls) if calls else ""
    assert not accepts(tok, fmt.call_grammar(TOOLS, force, parallel), text), case


@pytest.mark.parametrize("name", list(FORMATS))
def test_extra_keys_and_text_around_the_call_are_rejected(tok, name):
    fmt = FORMATS[name]()
    grammar = fmt.call_grammar(TOOLS, None, True)
    text = grammar_text(fmt, [NOOP])
    extra = text.replace('{}}', '{}, "id": "x"}')
    assert extra != text and split_calls(fmt, extra)[1]  # the parser would take it; the grammar must not
    assert not accepts(tok, grammar, extra)
    assert not accepts(tok, grammar, "Sure! " + text)
    assert not accepts(tok, grammar, text + " done")


@pytest.mark.parametrize("name", list(FORMATS))
def test_json_layout_is_pinned_to_json_dumps_defaults(tok, name):
    """No free whitespace: a small model cannot loop on newlines, and render_calls matches exactly."""
    fmt = FORMATS[name]()
    grammar = fmt.call_grammar(TOOLS, None, False)
    text = grammar_text(fmt, [NOOP])
    assert accepts(tok, grammar, text)
    assert not accepts(tok, grammar, text.replace('", "', '","'))
    assert not accepts(tok, grammar, text.replace('{"name"', '{ "name"'))
    assert not accepts(tok, grammar, text.replace('"noop", ', '"noop",\n'))


@pytest.mark.parametrize("name", list(FORMATS))
def test_forcing_an_unknown_tool_is_an_error_naming_it(name):
    with pytest.raises(ValueError, match="'nope'"):
        FORMATS[name]().call_grammar(TOOLS, "nope", False)
    with pytest.raises(ValueError):
        FORMATS[name]().call_grammar([], None, False)


def test_grammar_shapes():
    tools = TOOLS[:1]
    assert FORMATS["hermes"]().call_grammar(tools, None, True).startswith(
        '%llguidance {}\nstart: call ("\\n" call)*\ncall: "<tool_call>\\n" body "\\n</tool_call>"\nbody: %json {')
    assert '\nstart: call ("; " call)*\ncall: body\n' in FORMATS["llama3_json"]().call_grammar(tools, None, True)
    assert '\nstart: "[TOOL_CALLS] " body\n' in FORMATS["mistral"]().call_grammar(tools, None, False)
    assert '"maxItems": 1' in FORMATS["mistral"]().call_grammar(tools, None, False)
    assert '\nstart: call\ncall: body\n' in FORMATS["internlm2"]().call_grammar(tools, None, False)
