"""What a LangChain model talks to: the in-process `openai` shims over one engine, or `openai`
clients of a running API server. Both have the same call surface and answer with the
same types, so the models above have one code path for both."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lmdeploy_sdk.messages import ChatTemplateConfig, TurbomindEngineConfig
from lmdeploy_sdk.sync_pipeline import Pipeline


@dataclass
class Connection:
    client: Any  # openai.OpenAI or lmdeploy_sdk.integrations.openai.OpenAI
    # a new openai.AsyncOpenAI or lmdeploy_sdk.integrations.openai.AsyncOpenAI
    make_async_client: Callable[[], Any]
    model_name: str  # what requests name as `model`
    end_session: Callable[[int], None]
    close: Callable[[], None]
    encode: Callable[[str], list[int]]  # the model's token ids of a text (no special tokens)

    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[Any]:
        """An async client for one call, closed on the loop that used it.

        Async HTTP connections belong to the event loop that opened them; a client kept
        across calls would outlive the loop of an asyncio.run / a test / a notebook cell
        and break when later closed from another one.
        """
        client = self.make_async_client()
        try:
            yield client
        finally:
            await client.close()


def in_process(
    model: str | None,
    pipeline: Pipeline | None,
    backend_config: TurbomindEngineConfig | None,
    chat_template_config: ChatTemplateConfig | None,
) -> Connection:
    """Load the model (or share `pipeline`) and open the in-process clients over it."""
    from lmdeploy_sdk.integrations.openai import AsyncOpenAI, OpenAI
    from lmdeploy_sdk.sync_pipeline import pipeline as load_pipeline

    owned = pipeline is None
    pipe = load_pipeline(model, backend_config, chat_template_config) if owned else pipeline
    client = OpenAI(pipeline=pipe)

    def close() -> None:
        client.close()
        if owned:
            pipe.close()

    def encode(text: str) -> list[int]:
        return pipe.tokenizer.encode(text, add_special_tokens=False)

    return Connection(client, lambda: AsyncOpenAI(pipeline=pipe), pipe.model_name, client.end_session, close, encode)


def api_base(url: str) -> str:
    """The `/v1` base the `openai` client wants, from a server URL given with or without it."""
    parts = urlsplit(url.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL of an api_server, got {url!r}")
    path = parts.path if parts.path.endswith("/v1") else parts.path + "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def remote(base_url: str, api_key: str | None, model: str | None, timeout: float | None,
           max_retries: int) -> Connection:
    """`openai` clients of the server at base_url; model None means the one it serves."""
    import openai

    from lmdeploy_sdk.server.client import APIClient

    base = api_base(base_url)
    args: dict[str, Any] = {"base_url": base, "api_key": api_key or "none", "max_retries": max_retries}
    if timeout is not None:
        args["timeout"] = timeout
    client = openai.OpenAI(**args)
    name = model or client.models.list().data[0].id

    def end_session(session_id: int) -> None:
        with APIClient(base[: -len("/v1")], api_key) as api:
            api.end_session(session_id)  # False (nothing to end) is fine

    def close() -> None:
        client.close()

    def encode(text: str) -> list[int]:
        with APIClient(base[: -len("/v1")], api_key) as api:
            return api.encode(text, add_bos=False)[0]

    return Connection(client, lambda: openai.AsyncOpenAI(**args), name, end_session, close, encode)
