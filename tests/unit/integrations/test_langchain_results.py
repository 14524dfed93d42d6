"""`openai` answers -> LangChain results, including the tool calls the server will emit once
structured output lands (built here by hand, as the `openai` client would parse them)."""
from __future__ import annotations

from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from lmdeploy_sdk.integrations.langchain.openai_results import (
    chat_result,
    completion_generations,
    delta_chunk,
    last_chunk,
    text_chunk,
)

USAGE = {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14, "prompt_tokens_details": {"cached_tokens": 6}}


def _completion(message: dict) -> ChatCompletion:
    return ChatCompletion.construct(**{
        "id": "c1", "object": "chat.completion", "created": 1, "model": "m", "usage": USAGE,
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": message}],
    })


def test_chat_result_text_usage_and_metadata():
    result = chat_result(_completion({"role": "assistant", "content": "hi"}))
    msg = result.generations[0].message
    assert msg.content == "hi" and msg.response_metadata["model_name"] == "m"
    assert msg.usage_metadata == {"input_tokens": 10, "output_tokens": 4, "total_tokens": 14,
                                  "input_token_details": {"cache_read": 6}}
    assert result.llm_output["token_usage"]["prompt_tokens"] == 10


def test_chat_result_tool_calls_valid_and_invalid():
    calls = [
        {"id": "t1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}},
        {"id": "t2", "type": "function", "function": {"name": "add", "arguments": "{not json"}},
    ]
    msg = chat_result(_completion({"role": "assistant", "content": None, "tool_calls": calls})).generations[0].message
    assert msg.content == ""
    assert [(c["name"], c["args"], c["id"]) for c in msg.tool_calls] == [("add", {"a": 1, "b": 2}, "t1")]
    assert [(c["name"], c["id"]) for c in msg.invalid_tool_calls] == [("add", "t2")]


def _chunk(delta: dict, finish: str | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk.construct(**{
        "id": "s1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })


def test_stream_chunks_merge_into_one_message():
    pieces = [
        delta_chunk(_chunk({"role": "assistant", "content": ""})),
        delta_chunk(_chunk({"content": "Hel"})),
        delta_chunk(_chunk({"tool_calls": [{"index": 0, "id": "t1",
                                            "function": {"name": "add", "arguments": '{"a"'}}]})),
        delta_chunk(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})),
    ]
    assert pieces[0] is None  # the role chunk carries nothing
    usage = ChatCompletion.construct(**{"usage": USAGE}).usage
    full = pieces[1]
    for piece in [*pieces[2:], last_chunk("m", "tool_calls", usage, "s1")]:
        full = full + piece
    msg = full.message
    assert msg.content == "Hel" and msg.tool_calls == [{"name": "add", "args": {"a": 1}, "id": "t1",
                                                         "type": "tool_call"}]
    assert msg.usage_metadata["input_tokens"] == 10 and msg.response_metadata["finish_reason"] == "tool_calls"
    assert msg.chunk_position == "last"


def test_completion_choices_group_per_prompt():
    completion = Completion.construct(**{
        "id": "x", "object": "text_completion", "created": 1, "model": "m", "usage": USAGE,
        "choices": [{"index": i, "text": f"t{i}", "finish_reason": "length", "logprobs": None} for i in (3, 1, 0, 2)],
    })
    grouped = completion_generations(completion, 2)
    assert [[g.text for g in group] for group in grouped] == [["t0", "t1"], ["t2", "t3"]]


def test_text_chunk():
    def chunk(text: str, finish: str | None) -> Completion:
        return Completion.construct(**{"id": "x", "object": "text_completion", "created": 1, "model": "m",
                                       "choices": [{"index": 0, "text": text, "finish_reason": finish}]})

    assert text_chunk(chunk("abc", None)).text == "abc"
    assert text_chunk(chunk("", None)) is None
    assert text_chunk(chunk("", "stop")).generation_info == {"finish_reason": "stop"}
    assert text_chunk(Completion.construct(id="x", choices=[], model="m", created=1)) is None
