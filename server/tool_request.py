"""A chat request's tools -> what the prompt carries, what decoding is forced to, and how the
output is read back.

- The model's chat template renders the tools when it can; when it cannot (the embedded SmolLM2's
  cannot), a system prompt describes them in the hermes format (lmdeploy_sdk.tools.fallback),
  so tools are never dropped silently.
- tool_choice "required" or a named function: the output is forced, through a grammar, to be
  calls in the format the output is parsed in, with arguments valid for the tool's schema.
- The format is chosen by the chat template (hermes, llama3_json, mistral, internlm2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmdeploy_sdk.server.invalid_request import InvalidRequest
from lmdeploy_sdk.server.schemas.chat import ChatCompletionRequest, NamedToolChoice
from lmdeploy_sdk.tools import ToolFormat, fallback_messages, template_renders_tools, tool_format_for


@dataclass(frozen=True)
class ToolPlan:
    messages: list[dict[str, Any]]  # as the chat template gets them
    template_tools: list[dict[str, Any]] | None  # for a template that renders tools itself
    forced_format: dict[str, Any] | None  # response_format that forces calls, for required/named
    format: ToolFormat | None  # how calls are read from the output (None: no tools in play)


def _function_dict(f: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": f.name}
    if f.description is not None:
        d["description"] = f.description
    d["parameters"] = f.parameters if f.parameters is not None else {"type": "object", "properties": {}}
    return d


def _has_tool_turns(messages: list[dict[str, Any]]) -> bool:
    return any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)


def _forced_function(req: ChatCompletionRequest, names: list[str]) -> tuple[bool, str | None]:
    """(whether calls are forced, the one function they must call or None for any)."""
    choice = req.tool_choice
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in names:
            raise InvalidRequest(f"tool_choice names function {name!r}, which is not among the tools {names}",
                                 "tool_choice")
        return True, name
    return choice == "required", None


def tool_plan(req: ChatCompletionRequest, messages: list[dict[str, Any]], chat_template: str | None) -> ToolPlan:
    tools = [{"type": t.type, "function": _function_dict(t.function)} for t in req.tools or []]
    if req.tool_choice not in (None, "none", "auto") and not tools:
        raise InvalidRequest("tool_choice 'required' or a named function needs tools", "tool_choice")
    active = bool(tools) and req.tool_choice != "none"
    renders = template_renders_tools(chat_template)
    if not renders and (active or _has_tool_turns(messages)):
        messages = fallback_messages(messages, tools if active else [])
    if not active:
        return ToolPlan(messages, None, None, None)
    fmt = tool_format_for(chat_template)
    forced, name = _forced_function(req, [t["function"]["name"] for t in tools])
    forced_format = None
    if forced:
        if req.response_format is not None and req.response_format.type != "text":
            raise InvalidRequest("response_format cannot be combined with tool_choice 'required' or a named "
                                 "function (the output is the tool call)", "response_format")
        grammar = fmt.call_grammar(tools, name, req.parallel_tool_calls)
        forced_format = {"type": "grammar", "grammar": grammar}
    return ToolPlan(messages, tools if renders else None, forced_format, fmt)
