"""Acceptance 1 of structured output: with the embedded 135M model, sampled answers constrained
by a JSON schema always validate, through pipeline(), the server and the OpenAI shim; json_object
always parses; a regex always matches."""
from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import openai
import pytest

from lmdeploy_sdk import GenerationConfig
from lmdeploy_sdk.bench.guided import PROMPT, SCHEMA
from lmdeploy_sdk.integrations.openai import AsyncOpenAI

pytestmark = pytest.mark.slow

# nested objects, enums, arrays, string length limits, additionalProperties: false (shared with
# `lmdeploy-sdk bench guided`, which times decoding under it)
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
MESSAGES = [{"role": "user", "content": PROMPT}]
SEEDS = range(50)
MAX_TOKENS = 160  # far more than the schema's longest answer needs


def _check_valid(texts: list[str]) -> None:
    assert len(texts) == len(SEEDS)
    for text in texts:
        jsonschema.validate(json.loads(text), SCHEMA)
    assert len(set(texts)) > len(texts) // 2  # sampled, not one answer repeated


def test_pipeline_json_schema_always_validates(smol_pipe):
    configs = [GenerationConfig(do_sample=True, temperature=1.0, random_seed=s, max_new_tokens=MAX_TOKENS,
                                response_format=JSON_SCHEMA) for s in SEEDS]
    outs = smol_pipe([PROMPT] * len(configs), gen_config=configs)
    assert all(o.finish_reason == "stop" for o in outs)
    _check_valid([o.text for o in outs])


async def _chat_many(client, model: str, **kw) -> list[str]:
    async def one(seed: int) -> str:
        r = await client.chat.completions.create(model=model, messages=MESSAGES, temperature=1.0, seed=seed,
                                                 max_tokens=MAX_TOKENS, **kw)
        return r.choices[0].message.content

    return await asyncio.gather(*(one(s) for s in SEEDS))


def test_server_json_schema_always_validates(smol_server):
    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{smol_server}/v1", api_key="unused", max_retries=0) as client:
            model = (await client.models.list()).data[0].id
            return await _chat_many(client, model, response_format=JSON_SCHEMA)

    _check_valid(asyncio.run(run()))


def test_shim_json_schema_always_validates(smol_pipe):
    async def run() -> list[str]:
        async with AsyncOpenAI(pipeline=smol_pipe) as client:
            return await _chat_many(client, client.model_name, response_format=JSON_SCHEMA)

    _check_valid(asyncio.run(run()))


def test_json_object_always_parses(smol_pipe):
    # any object: nothing limits its keys or strings, and at temperatures >= 0.5 this 135M model may
    # add keys until max_tokens cuts the object; sampled at 0.3 it closes it
    configs = [GenerationConfig(do_sample=True, temperature=0.3, random_seed=s, max_new_tokens=256,
                                response_format={"type": "json_object"}) for s in range(16)]
    outs = smol_pipe(["Return a JSON object with a cat's name and age."] * 16, gen_config=configs)
    for o in outs:
        assert o.finish_reason == "stop", o.text
        assert isinstance(json.loads(o.text), dict)


def test_regex_always_matches(smol_pipe):
    pattern = r"[0-9]{3}-[0-9]{4}( ext\. [0-9]{1,3})?"
    configs = [GenerationConfig(do_sample=True, temperature=1.0, random_seed=s, max_new_tokens=32,
                                response_format={"type": "regex_schema", "regex_schema": pattern})
               for s in range(16)]
    outs = smol_pipe(["What is your phone number?"] * 16, gen_config=configs)
    for o in outs:
        assert re.fullmatch(pattern, o.text), o.text
