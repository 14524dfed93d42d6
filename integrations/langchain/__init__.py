"""LangChain models on lmdeploy-sdk: `LMDeployChat` (chat model) and `LMDeploy` (text LLM).

Each runs the engine in this process (`model=PATH_OR_NAME`, or `pipeline=pipe` to share
one) or calls a running api_server (`base_url=URL`, `api_key=...`).
"""
from __future__ import annotations

from lmdeploy_sdk.integrations.langchain.chat_model import LMDeployChat
from lmdeploy_sdk.integrations.langchain.llm import LMDeploy

__all__ = ["LMDeploy", "LMDeployChat"]
