"""Which tool-call format a chat template teaches, and whether it renders tools at all."""
from __future__ import annotations

import functools
import re
from types import MappingProxyType

import jinja2
from jinja2 import meta

from lmdeploy_sdk.tools.base import ToolFormat
from lmdeploy_sdk.tools.hermes import HermesFormat
from lmdeploy_sdk.tools.internlm2 import InternLM2Format
from lmdeploy_sdk.tools.llama3 import Llama3JsonFormat
from lmdeploy_sdk.tools.mistral import MistralFormat

__all__ = ["FORMATS", "tool_format_for", "template_renders_tools"]

FORMATS = MappingProxyType({
    f.name: f for f in (HermesFormat, Llama3JsonFormat, MistralFormat, InternLM2Format)
})

# (markers in the template text, format), first match wins; no match -> hermes, the fallback format
_MARKERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("<tool_call>",), "hermes"),
    (("<|python_tag|>", "Environment: ipython"), "llama3_json"),
    (("[TOOL_CALLS]",), "mistral"),
    (("<|action_start|>", "<|plugin|>"), "internlm2"),
)
_JINJA_CODE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_TOOLS_WORD = re.compile(r"\btools\b")


def tool_format_for(chat_template: str | None, name: str | None = None) -> ToolFormat:
    """The format to parse and force calls in: `name` if given, else what the template teaches."""
    if name is not None:
        if name not in FORMATS:
            raise ValueError(f"unknown tool-call format {name!r}; known formats: {', '.join(FORMATS)}")
        return FORMATS[name]()
    for markers, fmt in _MARKERS:
        if chat_template and any(m in chat_template for m in markers):
            return FORMATS[fmt]()
    return HermesFormat()


@functools.lru_cache(maxsize=16)  # parsed once per template, not per request
def template_renders_tools(chat_template: str | None) -> bool:
    """True when the template reads the `tools` variable, i.e. passing tools to it is not a no-op."""
    if not chat_template:
        return False
    env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do"])
    try:
        return "tools" in meta.find_undeclared_variables(env.parse(chat_template))
    except jinja2.TemplateSyntaxError:  # e.g. HF's {% generation %} tag: look at the code blocks instead
        return any(_TOOLS_WORD.search(block) for block in _JINJA_CODE.findall(chat_template))
