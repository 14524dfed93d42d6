"""The OpenAI-compatible API server (Litestar + msgspec + uvicorn) and its HTTP client.

Names load on first use, so `from lmdeploy_sdk.server import APIClient` needs only httpx.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "create_app": "lmdeploy_sdk.server.app",
    "ServerSettings": "lmdeploy_sdk.server.settings",
    "APIClient": "lmdeploy_sdk.server.client",
    "APIClientError": "lmdeploy_sdk.server.client",
    "run_server": "lmdeploy_sdk.server.launch",
}

__all__ = ["create_app", "ServerSettings", "APIClient", "APIClientError", "run_server"]

if TYPE_CHECKING:
    from lmdeploy_sdk.server.app import create_app
    from lmdeploy_sdk.server.client import APIClient, APIClientError
    from lmdeploy_sdk.server.launch import run_server
    from lmdeploy_sdk.server.settings import ServerSettings


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lmdeploy_sdk.server' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
