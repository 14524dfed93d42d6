"""Picking the format from a chat template, and telling whether a template renders tools."""
from __future__ import annotations

import json

import pytest

from lmdeploy_sdk.tools import (
    HermesFormat,
    InternLM2Format,
    Llama3JsonFormat,
    MistralFormat,
    template_renders_tools,
    tool_format_for,
)

QWEN = ('{%- if tools %}{{- "<|im_start|>system\\n# Tools\\n<tools>" }}{%- for tool in tools %}{{- tool | tojson }}'
        '{%- endfor %}{{- "</tools>\\n<tool_call>\\n{\\"name\\": <function-name>}\\n</tool_call>" }}{%- endif %}')
LLAMA = ('{%- if tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}'
         '{%- if message.tool_calls %}{{- "<|python_tag|>" }}{%- endif %}')
MISTRAL = '{%- if message.tool_calls %}{{- "[TOOL_CALLS] [" }}{%- endif %}{%- if tools %}[AVAILABLE_TOOLS]{% endif %}'
INTERN = '{%- if plugins %}{{ "<|im_start|>system name=<|plugin|>\\n" }}{% endif %}<|action_start|>'


@pytest.mark.parametrize("template, cls", [
    (QWEN, HermesFormat), (LLAMA, Llama3JsonFormat), ("Environment: ipython", Llama3JsonFormat),
    (MISTRAL, MistralFormat), (INTERN, InternLM2Format), ("<|plugin|>", InternLM2Format),
    (None, HermesFormat), ("", HermesFormat), ("{{ messages[0]['content'] }}", HermesFormat),
])
def test_format_is_detected_from_the_template(template, cls):
    fmt = tool_format_for(template)
    assert type(fmt) is cls and fmt.name == {HermesFormat: "hermes", Llama3JsonFormat: "llama3_json",
                                             MistralFormat: "mistral", InternLM2Format: "internlm2"}[cls]


def test_an_explicit_name_wins_and_unknown_names_list_the_known_ones():
    assert type(tool_format_for(QWEN, "mistral")) is MistralFormat
    assert type(tool_format_for(None, "internlm2")) is InternLM2Format
    with pytest.raises(ValueError, match="hermes, llama3_json, mistral, internlm2"):
        tool_format_for(QWEN, "qwen")


def test_each_call_gets_a_fresh_format_instance():
    assert tool_format_for(None) is not tool_format_for(None)


def smollm2_template(tokenizer_dir) -> str:
    path = tokenizer_dir / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return json.loads((tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]


def test_smollm2_template_does_not_render_tools_and_falls_back_to_hermes(tokenizer_dir):
    template = smollm2_template(tokenizer_dir)
    assert "im_start" in template
    assert not template_renders_tools(template)
    assert type(tool_format_for(template)) is HermesFormat


@pytest.mark.parametrize("template, renders", [
    (QWEN, True), (LLAMA, True), (MISTRAL, True),
    ("{% for t in tools %}{{ t.function.name }}{% endfor %}", True),
    ("{% generation %}{{ tools }}{% endgeneration %}", True),  # HF-only tag: not plain Jinja
    ("You have no tools. {{ messages }}", False),
    ("{% set tools = [] %}{{ tools }}", False),
    (INTERN, False), (None, False), ("", False),
])
def test_template_renders_tools(template, renders):
    assert template_renders_tools(template) is renders
