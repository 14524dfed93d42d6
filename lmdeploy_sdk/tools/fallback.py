"""Tools for a chat template that does not render them: teach the hermes format in a system prompt.

Without this the tools of a request would be dropped silently. Past calls and tool results
are rewritten into plain assistant and user turns, which any template can render.
"""
from __future__ import annotations

import json
from typing import Any

from lmdeploy_sdk.tools.hermes import HermesFormat
from lmdeploy_sdk.tools.schema import tool_function

__all__ = ["fallback_messages", "tools_system_prompt"]

_INSTRUCTIONS = (
    "# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def _text(content: Any) -> str:
    """Message content (str, None, or OpenAI text parts) as one string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise ValueError(f"message content must be a str, None or a list of text parts, got {type(content).__name__}")


def tools_system_prompt(tools: list[dict]) -> str:
    """The system text that lists the tools (as OpenAI JSON) and how to call them."""
    lines = []
    for tool in tools:
        fn = tool_function(tool)
        spec = {k: fn[k] for k in ("name", "description", "parameters") if k in fn}
        lines.append(json.dumps({"type": "function", "function": spec}, ensure_ascii=False))
    return _INSTRUCTIONS.format(tools="\n".join(lines))


def fallback_messages(messages: list[dict], tools: list[dict]) -> list[dict]:
    """New messages that carry the tools, past calls and tool results as plain text turns."""
    hermes = HermesFormat()
    out: list[dict] = []
    tool_turn: dict | None = None  # the user turn that consecutive tool results are merged into
    for message in messages:
        role = message.get("role")
        if role == "tool":
            block = f"<tool_response>\n{_text(message.get('content'))}\n</tool_response>"
            if tool_turn is not None:
                tool_turn["content"] += "\n" + block
            else:
                tool_turn = {"role": "user", "content": block}
                out.append(tool_turn)
            continue
        tool_turn = None
        if role == "assistant" and message.get("tool_calls"):
            text = _text(message.get("content"))
            calls = hermes.render_calls(message["tool_calls"])
            rest = {k: v for k, v in message.items() if k != "tool_calls"}
            out.append({**rest, "content": f"{text}\n{calls}" if text else calls})
        else:
            out.append(dict(message))
    prompt = tools_system_prompt(tools)
    if out and out[0].get("role") == "system":
        system = _text(out[0].get("content"))
        out[0]["content"] = f"{prompt}\n\n{system}" if system else prompt
    else:
        out.insert(0, {"role": "system", "content": prompt})
    return out
