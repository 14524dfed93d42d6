"""Tool calling that always parses: per-format parsers, grammars that force calls, and a
prompt fallback for chat templates that do not render tools.

- `tool_format_for(template, name)` picks the format (hermes, llama3_json, mistral, internlm2).
- `ToolFormat.parser()` splits streamed output into content and `ParsedCall`s.
- `ToolFormat.call_grammar(...)` is an llguidance Lark grammar for tool_choice "required"/named.
- `fallback_messages(...)` teaches the hermes format when `template_renders_tools` is False.
"""
from __future__ import annotations

from lmdeploy_sdk.tools.base import ToolFormat, split_calls
from lmdeploy_sdk.tools.calls import ParsedCall, ToolCallParser
from lmdeploy_sdk.tools.detect import FORMATS, template_renders_tools, tool_format_for
from lmdeploy_sdk.tools.fallback import fallback_messages, tools_system_prompt
from lmdeploy_sdk.tools.hermes import HermesFormat
from lmdeploy_sdk.tools.internlm2 import InternLM2Format
from lmdeploy_sdk.tools.llama3 import Llama3JsonFormat
from lmdeploy_sdk.tools.mistral import MistralFormat

__all__ = [
    "ParsedCall",
    "ToolCallParser",
    "ToolFormat",
    "HermesFormat",
    "Llama3JsonFormat",
    "MistralFormat",
    "InternLM2Format",
    "FORMATS",
    "tool_format_for",
    "template_renders_tools",
    "fallback_messages",
    "tools_system_prompt",
    "split_calls",
]
