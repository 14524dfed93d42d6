"""Tools for templates that do not render them: a hermes system prompt, calls and results as text."""
from __future__ import annotations

import copy
import json

from lmdeploy_sdk.tools import HermesFormat, fallback_messages, split_calls
from lmdeploy_sdk.tools.fallback import tools_system_prompt

TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALLS = [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
         {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]
CONVERSATION = [
    {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": None, "tool_calls": CALLS},
    {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "rain"}]},
    {"role": "assistant", "content": "Paris is sunny, Rome rainy."},
    {"role": "user", "content": "And Oslo?"},
    {"role": "assistant", "content": "Checking.", "tool_calls": CALLS[:1]},
    {"role": "tool", "tool_call_id": "call_a", "content": "snow"},
]


def test_system_prompt_lists_tools_as_openai_json_and_teaches_hermes():
    prompt = tools_system_prompt([TOOL])
    listed = prompt.split("<tools>\n")[1].split("\n</tools>")[0]
    assert json.loads(listed) == {"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city.", "parameters": TOOL["function"]["parameters"]}}
    assert prompt.endswith('<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def test_conversation_is_rewritten_without_mutating_the_input():
    before = copy.deepcopy(CONVERSATION)
    out = fallback_messages(CONVERSATION, [TOOL])
    assert CONVERSATION == before
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user", "assistant", "user", "assistant",
                                        "user"]
    assert out[0]["content"] == tools_system_prompt([TOOL]) + "\n\nBe brief."
    assert out[2]["content"] == HermesFormat().render_calls(CALLS) and "tool_calls" not in out[2]
    assert out[3]["content"] == "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrain\n</tool_response>"
    assert out[6]["content"] == "Checking.\n" + HermesFormat().render_calls(CALLS[:1])
    assert out[7]["content"] == "<tool_response>\nsnow\n</tool_response>"
    assert all(isinstance(m["content"], str) for m in out)


def test_rendered_calls_parse_back_to_the_same_calls():
    out = fallback_messages(CONVERSATION, [TOOL])
    content, calls = split_calls(HermesFormat(), out[2]["content"])
    assert content == "" and [(c.name, c.arguments) for c in calls] == [
        (c["function"]["name"], c["function"]["arguments"]) for c in CALLS]


def test_a_system_message_is_added_when_there_is_none():
    out = fallback_messages([{"role": "user", "content": "hi"}], [TOOL])
    assert out == [{"role": "system", "content": tools_system_prompt([TOOL])}, {"role": "user", "content": "hi"}]


def test_the_fallback_renders_through_smollm2s_template(tokenizer_dir):
    from lmdeploy_sdk.tokenizer import Tokenizer

    prompt = Tokenizer(tokenizer_dir).apply_chat_template(fallback_messages(CONVERSATION, [TOOL]))
    assert prompt.startswith("<|im_start|>system\n# Tools\n")
    assert "You are a helpful AI assistant named SmolLM" not in prompt  # ours replaces the default system
    assert '"name": "get_weather"' in prompt and "<tool_response>\nsnow\n</tool_response>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
