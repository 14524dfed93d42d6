from __future__ import annotations

import json

import pytest

from lmdeploy_sdk.server.tool_calls import ToolCallStream, split_tool_calls

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_text_without_calls_is_unchanged():
    assert split_tool_calls("just <b>text</b> and <tool") == ("just <b>text</b> and <tool", [])


def test_calls_are_extracted_in_order():
    content, calls = split_tool_calls("Let me check." + CALL + CALL.replace("Paris", "Rome"))
    assert content == "Let me check."
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert calls[0].id != calls[1].id and calls[0].type == "function"


def test_bad_tag_bodies_stay_text():
    for text in ["<tool_call>not json</tool_call>", '<tool_call>{"arguments": {}}</tool_call>',
                 "<tool_call>[1]</tool_call>", '<tool_call>{"name": "x"'] :
        assert split_tool_calls(text) == (text, [])


def test_string_arguments_and_parameters_key():
    _, calls = split_tool_calls('<tool_call>{"name": "f", "parameters": {"a": 1}}</tool_call>')
    assert calls[0].function.arguments == '{"a": 1}'
    _, calls = split_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert calls[0].function.arguments == '{"a": 1}'


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_streaming_matches_whole_text_for_any_split(step):
    text = "Sure <tool" + "x>" + " then " + CALL + " done <"
    stream = ToolCallStream()
    content, calls = [], []
    for i in range(0, len(text), step):
        c, d = stream.feed(text[i:i + step])
        content.append(c)
        calls.extend(d)
    content.append(stream.flush())
    whole_content, whole_calls = split_tool_calls(text)
    assert "".join(content) == whole_content == "Sure <toolx> then  done <"
    assert [c.index for c in calls] == [0]
    assert [c.function for c in calls] == [c.function for c in whole_calls]


def test_streaming_holds_back_only_a_possible_tag_start():
    stream = ToolCallStream()
    assert stream.feed("abc <tool_") == ("abc ", [])
    assert stream.feed("x") == ("<tool_x", [])
