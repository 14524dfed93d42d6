"""In-process `openai` clients: change the import, keep the code.

    from lmdeploy_sdk.integrations.openai import OpenAI   # instead of: from openai import OpenAI
    client = OpenAI(model="smollm2-135m-instruct")         # or OpenAI(pipeline=pipe)
    client.chat.completions.create(model=client.model_name, messages=[...], stream=True)

Requests are validated and translated by the API server's own code and answered
with the `openai` package's types and exceptions, without HTTP.
"""
from __future__ import annotations

from lmdeploy_sdk.integrations.openai.async_client import AsyncOpenAI
from lmdeploy_sdk.integrations.openai.streams import AsyncChunkStream, ChunkStream
from lmdeploy_sdk.integrations.openai.sync_client import OpenAI

__all__ = ["AsyncChunkStream", "AsyncOpenAI", "ChunkStream", "OpenAI"]
