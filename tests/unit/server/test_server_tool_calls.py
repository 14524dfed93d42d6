"""The server's side of tool calls: parsed calls become OpenAI tool_calls, and streamed ones
deltas numbered in order (the parsing itself is tested in tests/unit/tools)."""
from __future__ import annotations

import json

import pytest

from lmdeploy_sdk.server.tool_calls import ToolCallStream, split_tool_calls
from lmdeploy_sdk.tools import tool_format_for

HERMES = tool_format_for(None)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_calls_become_openai_tool_calls():
    content, calls = split_tool_calls(HERMES, "Let me check." + CALL + CALL.replace("Paris", "Rome"))
    assert content == "Let me check."
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert calls[0].id != calls[1].id and calls[0].type == "function"
    assert split_tool_calls(HERMES, "no calls <b>") == ("no calls <b>", [])


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_streamed_deltas_match_the_whole_answer(step):
    text = "Sure " + CALL + CALL.replace("Paris", "Rome") + CALL  # the repeated call is dropped
    stream = ToolCallStream(HERMES)
    content, deltas = [], []
    for i in range(0, len(text), step):
        c, d = stream.feed(text[i:i + step])
        content.append(c)
        deltas.extend(d)
    tail, more = stream.flush()
    content.append(tail)
    deltas.extend(more)
    whole_content, whole_calls = split_tool_calls(HERMES, text)
    assert "".join(content) == whole_content
    assert [d.index for d in deltas] == [0, 1] and stream.calls == 2
    assert [d.function for d in deltas] == [c.function for c in whole_calls]


def test_a_call_completed_only_at_the_end_comes_out_of_flush():
    stream = ToolCallStream(tool_format_for(None, "llama3_json"))
    content, deltas = stream.feed('{"name": "f", "parameters": {"a": 1}}')
    tail, more = stream.flush()
    calls = deltas + more
    assert content + tail == "" and [c.function.name for c in calls] == ["f"]


def test_an_exact_repeat_of_a_call_is_dropped():
    content, calls = split_tool_calls(HERMES, CALL + "\n" + CALL + "\n" + CALL.replace("Paris", "Rome"))
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Rome"]
