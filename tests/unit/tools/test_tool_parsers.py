"""Parsing what models write, per format: content vs calls, malformed calls, stripped special tokens."""
from __future__ import annotations

import json
import re

import pytest

from lmdeploy_sdk.tools import (
    HermesFormat,
    InternLM2Format,
    Llama3JsonFormat,
    MistralFormat,
    ParsedCall,
    split_calls,
)

HERMES, LLAMA, MISTRAL, INTERN = HermesFormat(), Llama3JsonFormat(), MistralFormat(), InternLM2Format()
ALL = [HERMES, LLAMA, MISTRAL, INTERN]
WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
WEATHER_P = '{"name": "get_weather", "parameters": {"city": "Paris"}}'


def calls_of(text: str, fmt) -> tuple[str, list[tuple[str, dict]]]:
    content, calls = split_calls(fmt, text)
    return content, [(c.name, json.loads(c.arguments)) for c in calls]


PARIS = ("get_weather", {"city": "Paris"})
ROME = ("get_weather", {"city": "Rome"})


@pytest.mark.parametrize("text, expected", [
    ("just <b>text</b> and <tool", ("just <b>text</b> and <tool", [])),
    (f"Let me check.<tool_call>\n{WEATHER}\n</tool_call>", ("Let me check.", [PARIS])),
    (f"<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n{WEATHER.replace('Paris', 'Rome')}\n</tool_call>\n",
     ("", [PARIS, ROME])),
    (f"<tool_call>{WEATHER_P}</tool_call> done", (" done", [PARIS])),
    ('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>', ("", [("f", {"a": 1})])),
    ('<tool_call>{"name": "f"}</tool_call>', ("", [("f", {})])),
    (f"<tool_call>\n{WEATHER}\n", ("", [PARIS])),  # generation stopped before the close tag
    (f"<tool_call>oops <tool_call>{WEATHER}</tool_call>", ("<tool_call>oops ", [PARIS])),
])
def test_hermes(text, expected):
    assert calls_of(text, HERMES) == expected


@pytest.mark.parametrize("bad", [
    "<tool_call>not json</tool_call>", '<tool_call>{"arguments": {}}</tool_call>', "<tool_call>[1]</tool_call>",
    '<tool_call>{"name": "x"', '<tool_call>{"name": 3, "arguments": {}}</tool_call>',
    '<tool_call>{"name": "f", "arguments": [1]}</tool_call>', '<tool_call>{"name": "f", "arguments": "{x"}</tool_call>',
    '<tool_call>{"name": "f", "arguments": {"a": NaN}}</tool_call>', "<tool_call>" + "[" * 100000 + "</tool_call>",
])
def test_malformed_hermes_calls_stay_text(bad):
    assert split_calls(HERMES, bad) == (bad, [])


@pytest.mark.parametrize("text, expected", [
    (WEATHER_P, ("", [PARIS])),
    (f"<|python_tag|>{WEATHER_P}", ("", [PARIS])),
    (f"  \n{WEATHER_P}\n", ("", [PARIS])),
    (f"{WEATHER_P}; {WEATHER_P.replace('Paris', 'Rome')}", ("", [PARIS, ROME])),
    (f"{WEATHER_P}\n{WEATHER_P.replace('Paris', 'Rome')}", ("", [PARIS, ROME])),
    (WEATHER, ("", [PARIS])),  # "arguments" is a synonym
    (f"Here you go: {WEATHER_P}", (f"Here you go: {WEATHER_P}", [])),
    ('{"answer": 42} is the JSON', ('{"answer": 42} is the JSON', [])),
    ('{"name": "f", "parameters": {}', ('{"name": "f", "parameters": {}', [])),
    ("<|python_tag|>print(1)", ("<|python_tag|>print(1)", [])),
    (f"{WEATHER_P} and that is all", (" and that is all", [PARIS])),  # a closed call is committed
    (f"{WEATHER_P}{WEATHER_P}", ("", [PARIS, PARIS])),
    (f'{{"answer": 42}}\n{WEATHER_P}', (f'{{"answer": 42}}\n{WEATHER_P}', [])),  # content once, content after
    ('{"name": "f", "parameters": {"s": "}{\\"]"}}', ("", [("f", {"s": '}{"]'})])),
])
def test_llama3_json(text, expected):
    assert calls_of(text, LLAMA) == expected


@pytest.mark.parametrize("text, expected", [
    (f"[TOOL_CALLS] [{WEATHER}]", ("", [PARIS])),
    (f"[TOOL_CALLS][{WEATHER}, {WEATHER.replace('Paris', 'Rome')}]", ("", [PARIS, ROME])),
    (f" [{WEATHER}]", ("", [PARIS])),  # [TOOL_CALLS] stripped as a control token
    (f"Sure. [TOOL_CALLS] [{WEATHER}]", ("Sure. ", [PARIS])),
    (f"[TOOL_CALLS] {WEATHER}", ("", [PARIS])),
    ("[1, 2] is a list", ("[1, 2] is a list", [])),
    ("[see](http://x) [TOOL", ("[see](http://x) [TOOL", [])),
    (f"[TOOL_CALLS] [{WEATHER}, 3]", (f"[TOOL_CALLS] [{WEATHER}, 3]", [])),
    ("[TOOL_CALLS] nothing", ("[TOOL_CALLS] nothing", [])),
    (f"Text [{WEATHER}]", (f"Text [{WEATHER}]", [])),  # no tag and not at the start: content
])
def test_mistral(text, expected):
    assert calls_of(text, MISTRAL) == expected


@pytest.mark.parametrize("text, expected", [
    (f"I will check.<|action_start|><|plugin|>\n{WEATHER_P}<|action_end|>\n", ("I will check.", [PARIS])),
    (f"\n{WEATHER_P}\n", ("", [PARIS])),  # tags stripped as special tokens
    (f"{WEATHER_P}\n{WEATHER_P.replace('Paris', 'Rome')}", ("", [PARIS, ROME])),
    ("<|action_start|><|interpreter|>\nprint(1)<|action_end|>", ("<|action_start|><|interpreter|>\nprint(1)"
                                                                  "<|action_end|>", [])),
    ("<|action_start|><|plugin|>\nnope<|action_end|>", ("<|action_start|><|plugin|>\nnope<|action_end|>", [])),
    (f"Text then {WEATHER_P}", (f"Text then {WEATHER_P}", [])),
])
def test_internlm2(text, expected):
    assert calls_of(text, INTERN) == expected


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
def test_ids_are_fresh_and_openai_shaped(fmt):
    text = fmt.render_calls([{"function": {"name": "f", "arguments": "{}"}}] * 3)
    _, calls = split_calls(fmt, text)
    assert len(calls) == 3 and len({c.id for c in calls}) == 3
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", c.id) for c in calls)
    assert isinstance(calls[0], ParsedCall)


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@pytest.mark.parametrize("text", ["", "  \n", "Hello, world!", "{", "[", "<", "}{][", '"\\'])
def test_plain_text_is_content_unchanged(fmt, text):
    assert split_calls(fmt, text) == (text, [])


def test_feed_releases_text_that_cannot_become_a_call():
    p = HERMES.parser()
    assert p.feed("Hello <tool") == ("Hello ", [])
    assert p.feed("box>!") == ("<toolbox>!", [])
    p = LLAMA.parser()
    assert p.feed("Sure") == ("Sure", []) and p.feed(' {"name"') == (' {"name"', [])
    p = MISTRAL.parser()
    assert p.feed("[TOOL") == ("", []) and p.feed("S]") == ("[TOOLS]", [])
    p = INTERN.parser()
    assert p.feed("Hi <|action") == ("Hi ", []) and p.feed("_end|>") == ("<|action_end|>", [])


@pytest.mark.parametrize("fmt, text", [
    (HERMES, f"<tool_call>\n{WEATHER}\n</tool_call>"),
    (LLAMA, WEATHER_P),
    (MISTRAL, f"[TOOL_CALLS] [{WEATHER}]"),
    (INTERN, f"<|action_start|><|plugin|>\n{WEATHER_P}<|action_end|>"),
    (INTERN, WEATHER_P),
], ids=["hermes", "llama3_json", "mistral", "internlm2", "internlm2-bare"])
def test_a_call_is_returned_when_it_closes_not_at_flush(fmt, text):
    p = fmt.parser()
    assert p.feed(text[:-1]) == ("", [])
    content, calls = p.feed(text[-1])
    assert content == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [PARIS]
    assert p.flush() == ("", [])


def test_unfinished_call_is_content_at_flush():
    p = HERMES.parser()
    assert p.feed('<tool_call>\n{"name": "get_weather", "argu') == ("", [])
    assert p.flush() == ('<tool_call>\n{"name": "get_weather", "argu', [])


def test_whitespace_is_dropped_only_next_to_calls():
    call = f"<tool_call>{WEATHER}</tool_call>"
    assert split_calls(HERMES, f"\n {call} \n{call}\n")[0] == ""
    assert split_calls(HERMES, f"Hi \n{call}\nBye\n")[0] == "Hi \n\nBye\n"
    assert split_calls(HERMES, " \n ") == (" \n ", [])
