"""Fixtures: a tiny model's AsyncEngine and a real server around it (see api_server_harness)."""
from __future__ import annotations

from typing import Iterator

import pytest
from api_server_harness import ENGINE_CONFIG, RunningServer, running_server

from lmdeploy_sdk import AsyncEngine, TurbomindEngineConfig
from lmdeploy_sdk.server import ServerSettings, create_app


@pytest.fixture(scope="session")
def tiny_engine(tiny_llama) -> Iterator[AsyncEngine]:
    engine = AsyncEngine(str(tiny_llama), TurbomindEngineConfig(**ENGINE_CONFIG), model_name="tiny-llama")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def server(tiny_engine) -> Iterator[RunningServer]:
    """The default server: no API keys, metrics on."""
    with running_server(create_app(tiny_engine, ServerSettings())) as s:
        yield s


@pytest.fixture(scope="session")
def model_name(tiny_engine) -> str:
    return tiny_engine.model_name
