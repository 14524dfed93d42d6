"""OpenAI request -> GenerationPlan, with the real SmolLM2 tokenizer."""
from __future__ import annotations

import msgspec
import pytest

from lmdeploy_sdk.messages import ChatTemplateConfig
from lmdeploy_sdk.server.schemas.chat import ChatCompletionRequest
from lmdeploy_sdk.server.schemas.completions import CompletionRequest
from lmdeploy_sdk.server.translate import (
    SEED_MODULUS,
    InvalidRequest,
    chat_plan,
    completion_plan,
    completion_prompts,
    message_dicts,
)
from lmdeploy_sdk.tokenizer import Tokenizer

SESSION_LEN = 512


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir) -> Tokenizer:
    return Tokenizer(tokenizer_dir)


def chat(**fields) -> ChatCompletionRequest:
    fields.setdefault("model", "m")
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return msgspec.convert(fields, ChatCompletionRequest)


def completion(**fields) -> CompletionRequest:
    fields.setdefault("model", "m")
    return msgspec.convert(fields, CompletionRequest)


def test_chat_prompt_is_the_chat_template(tokenizer):
    plan = chat_plan(chat(), tokenizer, SESSION_LEN)
    assert plan.prompts == [tokenizer.encode_prompt([{"role": "user", "content": "hi"}])]
    assert plan.num_choices == 1 and plan.prompt_of_choice == [0]
    assert plan.prompt_tokens == len(plan.prompts[0])


def test_content_parts_and_developer_role(tokenizer):
    req = chat(messages=[{"role": "developer", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert message_dicts(req.messages)[0]["role"] == "system"
    plan = chat_plan(req, tokenizer, SESSION_LEN)
    same = tokenizer.encode_prompt([{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}])
    assert plan.prompts == [same]


def test_sampling_fields_map_to_generation_config(tokenizer):
    plan = chat_plan(chat(temperature=0.5, top_p=0.9, top_k=7, min_p=0.1, repetition_penalty=1.2, max_tokens=9,
                          stop="END", ignore_eos=True, skip_special_tokens=False, min_new_tokens=2),
                     tokenizer, SESSION_LEN)
    cfg = plan.configs[0]
    assert (cfg.do_sample, cfg.temperature, cfg.top_p, cfg.top_k, cfg.min_p) == (True, 0.5, 0.9, 7, 0.1)
    assert (cfg.repetition_penalty, cfg.max_new_tokens, cfg.stop_words) == (1.2, 9, ["END"])
    assert (cfg.ignore_eos, cfg.skip_special_tokens, cfg.min_new_tokens) == (True, False, 2)
    assert cfg.logprobs is None


def test_temperature_zero_or_tiny_is_greedy(tokenizer):
    assert not chat_plan(chat(temperature=0), tokenizer, SESSION_LEN).configs[0].do_sample
    assert not chat_plan(chat(temperature=1e-30), tokenizer, SESSION_LEN).configs[0].do_sample


def test_max_tokens_defaults_to_the_rest_of_the_session(tokenizer):
    plan = chat_plan(chat(), tokenizer, SESSION_LEN)
    assert plan.configs[0].max_new_tokens == SESSION_LEN - plan.prompt_tokens
    assert chat_plan(chat(max_tokens=5, max_completion_tokens=3), tokenizer, SESSION_LEN).configs[0].max_new_tokens == 3


def test_n_choices_get_consecutive_seeds(tokenizer):
    plan = chat_plan(chat(n=3, seed=10), tokenizer, SESSION_LEN)
    assert [c.random_seed for c in plan.configs] == [10, 11, 12]
    wrapped = chat_plan(chat(n=2, seed=-1), tokenizer, SESSION_LEN)
    assert [c.random_seed for c in wrapped.configs] == [SEED_MODULUS - 1, 0]
    assert all(c.random_seed is None for c in chat_plan(chat(n=2), tokenizer, SESSION_LEN).configs)


def test_logprobs_request(tokenizer):
    assert chat_plan(chat(logprobs=True, top_logprobs=4), tokenizer, SESSION_LEN).configs[0].logprobs == 4
    assert chat_plan(chat(logprobs=True), tokenizer, SESSION_LEN).configs[0].logprobs == 0
    with pytest.raises(InvalidRequest) as err:  # OpenAI's rule; it was silently ignored
        chat_plan(chat(top_logprobs=4), tokenizer, SESSION_LEN)
    assert err.value.param == "top_logprobs"


TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.mark.parametrize("fields, param, code", [
    (dict(messages=[{"role": "user", "content": "word " * 600}]), "messages", "context_length_exceeded"),
    (dict(presence_penalty=0.5), "presence_penalty", "unsupported_parameter"),
    (dict(response_format={"type": "json_schema", "json_schema": {"schema": {"type": "string", "format": "no"},
                                                                  "strict": True}}),
     "response_format", "invalid_request"),
    (dict(tool_choice="required"), "tool_choice", "invalid_request"),  # without tools
    (dict(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice",
     "invalid_request"),
    (dict(tools=[TOOL], tool_choice="required", response_format={"type": "json_object"}), "response_format",
     "invalid_request"),
    (dict(logit_bias={"x": 1}), "logit_bias", "invalid_request"),
    (dict(stop=["ok", ""]), "stop", "invalid_request"),
    (dict(messages=[{"role": "user"}]), "messages", "invalid_request"),
])
def test_chat_rejections_name_the_field(tokenizer, fields, param, code):
    with pytest.raises(InvalidRequest) as err:
        chat_plan(chat(**fields), tokenizer, SESSION_LEN)
    assert err.value.param == param and err.value.code == code


def test_tools_are_rendered_into_the_prompt(tokenizer_dir):
    template = ("{% for t in tools or [] %}TOOL:{{ t.function.name }}\n{% endfor %}"
                "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    tok = Tokenizer(tokenizer_dir, ChatTemplateConfig(chat_template=template))
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    with_tools = tok.decode(chat_plan(chat(tools=[tool]), tok, SESSION_LEN).prompts[0])
    assert with_tools.startswith("TOOL:get_weather\nuser: hi")
    without = tok.decode(chat_plan(chat(tools=[tool], tool_choice="none"), tok, SESSION_LEN).prompts[0])
    assert "TOOL:" not in without


@pytest.mark.parametrize("prompt, expected", [
    ("a", ["a"]), (["a", "b"], ["a", "b"]), ([1, 2], [[1, 2]]), ([[1], [2, 3]], [[1], [2, 3]]),
])
def test_completion_prompt_forms(prompt, expected):
    assert completion_prompts(prompt) == expected


def test_completion_plan_is_prompts_times_n(tokenizer):
    plan = completion_plan(completion(prompt=["a", "b c"], n=2, max_tokens=4, seed=1), tokenizer, SESSION_LEN)
    assert plan.prompts == [tokenizer.encode("a"), tokenizer.encode("b c")]
    assert plan.prompt_of_choice == [0, 0, 1, 1]
    assert [c.random_seed for c in plan.configs] == [1, 2, 1, 2]
    ids = completion_plan(completion(prompt=[5, 6, 7]), tokenizer, SESSION_LEN)
    assert ids.prompts == [[5, 6, 7]] and ids.configs[0].max_new_tokens == 16


@pytest.mark.parametrize("fields, param", [
    (dict(prompt="x", suffix="y"), "suffix"),
    (dict(prompt="x", best_of=3), "best_of"),
    (dict(prompt="x", echo=True, logprobs=1), "echo"),
    (dict(prompt=[True]), "prompt"),
    (dict(prompt=[[1], []]), "prompt"),
])
def test_completion_rejections(tokenizer, fields, param):
    with pytest.raises(InvalidRequest) as err:
        completion_plan(completion(**fields), tokenizer, SESSION_LEN)
    assert err.value.param == param


def test_tools_without_template_support_are_described_in_a_system_prompt(tokenizer):
    plan = chat_plan(chat(tools=[TOOL]), tokenizer, SESSION_LEN)
    prompt = tokenizer.decode(plan.prompts[0])
    assert '"name": "get_weather"' in prompt and "<tool_call>" in prompt  # SmolLM2's template has no tools
    assert plan.tool_format.name == "hermes" and plan.configs[0].response_format is None  # auto: not forced
    none = chat_plan(chat(tools=[TOOL], tool_choice="none"), tokenizer, SESSION_LEN)
    assert none.tool_format is None and "get_weather" not in tokenizer.decode(none.prompts[0])


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_required_and_named_tool_choice_force_a_call_through_a_grammar(tokenizer, choice):
    plan = chat_plan(chat(tools=[TOOL], tool_choice=choice, n=2), tokenizer, SESSION_LEN)
    formats = [c.response_format for c in plan.configs]
    assert all(f["type"] == "grammar" and "<tool_call>" in f["grammar"] and "get_weather" in f["grammar"]
               for f in formats)


def test_past_calls_and_results_reach_a_template_without_tools(tokenizer):
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather",
                                                                  "arguments": '{"city": "Oslo"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "-3 C"}]
    prompt = tokenizer.decode(chat_plan(chat(messages=messages, tools=[TOOL]), tokenizer, SESSION_LEN).prompts[0])
    assert '{"name": "get_weather", "arguments": {"city": "Oslo"}}' in prompt
    assert "<tool_response>\n-3 C\n</tool_response>" in prompt


def test_response_format_and_logit_bias_reach_the_config(tokenizer):
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}}
    plan = chat_plan(chat(response_format=fmt, logit_bias={"5": -100, "7": 2.5}), tokenizer, SESSION_LEN)
    assert plan.configs[0].response_format == fmt
    assert plan.configs[0].logit_bias == {5: -100.0, 7: 2.5}
    regex = completion_plan(completion(prompt="x", response_format={"type": "regex_schema", "regex_schema": "a+"}),
                            tokenizer, SESSION_LEN)
    assert regex.configs[0].response_format == {"type": "regex_schema", "regex_schema": "a+"}
