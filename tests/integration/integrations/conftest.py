"""Engines and servers for the integration tests: each is loaded once and shared, because
loading is the slow part; the server runs over the same engine as the in-process clients,
so both answer from identical weights and cache."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from lmdeploy_sdk import Pipeline, TurbomindEngineConfig, pipeline
from lmdeploy_sdk.server import ServerSettings, create_app
from lmdeploy_sdk.server.launch import build_server

SMALL_ENGINE = dict(device="cpu", session_len=1024, cache_block_seq_len=16, cache_max_entry_count=512,
                    max_batch_size=16)


@contextmanager
def serve(pipe: Pipeline) -> Iterator[str]:
    """An api_server over `pipe`'s engine on 127.0.0.1 and a port the OS picks; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = build_server(create_app(pipe.async_engine, ServerSettings()), "127.0.0.1", port, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test api_server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="session")
def serve_pipeline():
    """`serve` for tests that start their own server (conftest modules are not importable by name)."""
    return serve


@pytest.fixture(scope="session")
def small_engine() -> dict:
    return dict(SMALL_ENGINE)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_llama) -> Iterator[Pipeline]:
    with pipeline(str(tiny_llama), backend_config=TurbomindEngineConfig(**SMALL_ENGINE),
                  model_name="tiny-llama") as pipe:
        yield pipe


@pytest.fixture(scope="session")
def tiny_server(tiny_pipe) -> Iterator[str]:
    with serve(tiny_pipe) as url:
        yield url


@pytest.fixture
def anyio_backend() -> str:
    """Async tests marked `anyio` run on asyncio (the engine's loop integration is asyncio's)."""
    return "asyncio"


@pytest.fixture(scope="session")
def smol_pipe(smollm2_dir) -> Iterator[Pipeline]:
    """The embedded SmolLM2-135M-Instruct, by its name (resolved to the run's converted copy)."""
    with pipeline("smollm2-135m-instruct", backend_config=TurbomindEngineConfig(**SMALL_ENGINE)) as pipe:
        yield pipe


@pytest.fixture(scope="session")
def smol_server(smol_pipe) -> Iterator[str]:
    with serve(smol_pipe) as url:
        yield url
