"""Acceptance 3 (generated half): schemathesis against the server's own OpenAPI schema.

A bounded number of examples per operation; every response must be a non-5xx that
conforms to the schema (status code, content type, headers, body).
"""
from __future__ import annotations

from typing import Iterator

import pytest
import schemathesis
from api_server_harness import ENGINE_CONFIG, running_server
from hypothesis import HealthCheck, settings
from schemathesis import checks

from lmdeploy_sdk import AsyncEngine, TurbomindEngineConfig
from lmdeploy_sdk.server import ServerSettings, create_app

MAX_EXAMPLES = 20
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
def fuzzed_server(tiny_llama) -> Iterator[str]:
    """Its own engine, so sessions the fuzzer opens don't touch the other tests' KV numbers."""
    config = TurbomindEngineConfig(**{**ENGINE_CONFIG, "session_len": 128})
    engine = AsyncEngine(str(tiny_llama), config, model_name=MODEL)
    try:
        with running_server(create_app(engine, ServerSettings())) as s:
            yield s.url
    finally:
        engine.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed_server):
    return schemathesis.openapi.from_url(f"{fuzzed_server}/docs/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_no_5xx_and_no_schema_violation(case, fuzzed_server):
    # Aim the examples at the served model so they reach generation (any string is schema-valid).
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = MODEL
    case.call_and_validate(base_url=fuzzed_server, checks=CHECKS, timeout=60)
