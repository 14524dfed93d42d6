"""Acceptance 3 (generated half): schemathesis against the server's own OpenAPI schema.

A bounded number of examples per operation; every response must be a non-5xx that
conforms to the schema (status code, content type, headers, body).
"""
from __future__ import annotations

from typing import Iterator

import httpx
import pytest
import schemathesis
from api_server_harness import ENGINE_CONFIG, running_server
from hypothesis import HealthCheck, settings
from schemathesis import checks

from lmdeploy_sdk import AsyncEngine, TurbomindEngineConfig
from lmdeploy_sdk.server import ServerSettings, create_app

MAX_EXAMPLES = 25
MODEL = "tiny-llama"
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzzed_engine(tiny_llama) -> Iterator[AsyncEngine]:
    """Its own engine, so sessions the fuzzer opens don't touch the other tests' KV numbers."""
    config = TurbomindEngineConfig(**{**ENGINE_CONFIG, "session_len": 128})
    engine = AsyncEngine(str(tiny_llama), config, model_name=MODEL)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def fuzzed_server(fuzzed_engine) -> Iterator[str]:
    with running_server(create_app(fuzzed_engine, ServerSettings())) as s:
        yield s.url


def with_served_model(schema: dict, model: str) -> dict:
    """The schema with every request body's `model` field an enum of the served model, so that
    the generated examples get past the model check and fuzz generation itself."""
    for component in schema.get("components", {}).get("schemas", {}).values():
        prop = component.get("properties", {}).get("model")
        if prop is not None and prop.get("type") == "string":
            component["properties"]["model"] = {"type": "string", "enum": [model]}
    return schema


@pytest.fixture(scope="module")
def api_schema(fuzzed_server):
    schema = httpx.get(f"{fuzzed_server}/docs/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(with_served_model(schema, MODEL))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_no_5xx_and_no_schema_violation(case, fuzzed_server):
    case.call_and_validate(base_url=fuzzed_server, checks=CHECKS, timeout=60)


def test_the_fuzzing_reached_generation(fuzzed_server, fuzzed_engine):
    """Runs after the fuzzing above (same module): the served model name in the schema let
    generated requests through to the engine."""
    stats = fuzzed_engine.stats()
    assert stats.prompt_tokens_total > 0 and stats.generated_tokens_total > 0, stats
