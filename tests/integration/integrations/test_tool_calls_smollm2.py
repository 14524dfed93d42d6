"""Acceptance 2 of structured output: with the embedded 135M model, tool_choice "required" and a
named tool always give a parseable call whose arguments validate against the tool's schema,
streamed and not; a LangChain tool loop with a calculator tool runs to its answer."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import jsonschema
import openai
import pytest
from langchain_core.messages import AIMessage, ToolMessage

from lmdeploy_sdk.integrations.langchain import LMDeployChat
from lmdeploy_sdk.integrations.openai import AsyncOpenAI

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": ADD}}]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
MESSAGES = [{"role": "user", "content": "Is it cold in Oslo today? And what is 2 + 3?"}]
SEEDS = range(10)


def _check_calls(calls: list[tuple[str, str]], only: str | None = None) -> None:
    assert calls, "no tool call"
    for name, arguments in calls:
        assert name in SCHEMAS and (only is None or name == only)
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])


async def _one(client, model: str, seed: int, choice, stream: bool) -> list[tuple[str, str]]:
    kw = dict(model=model, messages=MESSAGES, tools=TOOLS, tool_choice=choice, temperature=1.0, seed=seed,
              max_tokens=120)
    if not stream:
        r = await client.chat.completions.create(**kw)
        assert r.choices[0].finish_reason == "tool_calls"
        return [(c.function.name, c.function.arguments) for c in r.choices[0].message.tool_calls]
    calls: dict[int, list[str]] = {}
    finish = None
    async for chunk in await client.chat.completions.create(stream=True, **kw):
        for choice_delta in chunk.choices:
            finish = choice_delta.finish_reason or finish
            for d in choice_delta.delta.tool_calls or []:
                entry = calls.setdefault(d.index, ["", ""])
                entry[0] += d.function.name or ""
                entry[1] += d.function.arguments or ""
    assert finish == "tool_calls"
    return [tuple(calls[i]) for i in sorted(calls)]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_required_and_named_calls_always_validate_on_the_server(smol_server, stream):
    named = {"type": "function", "function": {"name": "get_weather"}}

    async def run():
        async with openai.AsyncOpenAI(base_url=f"{smol_server}/v1", api_key="unused", max_retries=0) as client:
            model = (await client.models.list()).data[0].id
            required = await asyncio.gather(*(_one(client, model, s, "required", stream) for s in SEEDS))
            forced = await asyncio.gather(*(_one(client, model, s, named, stream) for s in SEEDS))
        return required, forced

    required, forced = asyncio.run(run())
    for calls in required:
        _check_calls(calls)
    for calls in forced:
        _check_calls(calls, only="get_weather")


def test_required_calls_validate_in_the_shim(smol_pipe):
    async def run():
        async with AsyncOpenAI(pipeline=smol_pipe) as client:
            return await asyncio.gather(*(_one(client, client.model_name, s, "required", s % 2 == 1)
                                          for s in SEEDS))

    for calls in asyncio.run(run()):
        _check_calls(calls)


def test_tool_loop_with_a_calculator(smol_pipe):
    """The loop of examples/structured_output.py: a forced first call (this model does not decide to
    call by itself), the tool's result, then an answer in words."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from structured_output import agent_loop
    finally:
        sys.path.remove(str(EXAMPLES))
    chat = LMDeployChat(pipeline=smol_pipe, temperature=0, max_tokens=96)
    messages = agent_loop(chat, "What is 12 * 7? Use the calculator.")
    calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m.content for m in messages if isinstance(m, ToolMessage)]
    assert calls and all(c["name"] == "calculator" for c in calls)
    assert results and not any(r.startswith("error") for r in results)  # the arguments were expressions
    assert isinstance(messages[-1], AIMessage) and not messages[-1].tool_calls and messages[-1].content
