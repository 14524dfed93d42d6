"""`OpenAI`: `openai.OpenAI`'s call surface, answered by an in-process engine.

Calls run on a private event loop thread (see loop_thread), so the client works
in scripts, threads and notebooks alike.
"""
from __future__ import annotations

from collections.abc import Awaitable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from openai.pagination import SyncPage
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ParsedChatCompletion

from lmdeploy_sdk.integrations.openai.async_client import AsyncOpenAI
from lmdeploy_sdk.integrations.openai.client_options import ClientOptions, ClientSettings
from lmdeploy_sdk.integrations.openai.engine_source import EngineSource
from lmdeploy_sdk.integrations.openai.loop_thread import LoopThread
from lmdeploy_sdk.integrations.openai.streams import AsyncChunkStream, ChunkStream
from lmdeploy_sdk.messages import ChatTemplateConfig, TurbomindEngineConfig
from lmdeploy_sdk.sync_pipeline import Pipeline

T = TypeVar("T")


async def _resolved(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _sync(loop: LoopThread, result: Any) -> Any:
    if isinstance(result, AsyncChunkStream):
        return ChunkStream(loop.iterate(result), result.response)
    return result


class ChatCompletions:
    def __init__(self, client: AsyncOpenAI, loop: LoopThread) -> None:
        self._client = client
        self._loop = loop

    def create(
        self, *, model: str, messages: Iterable[Any], stream: bool = False, **params: Any
    ) -> ChatCompletion | ChunkStream[ChatCompletionChunk]:
        """As `openai`'s create(): the OpenAI fields, the server's extras (top_k, session_id, ...)
        directly or in extra_body; a ChatCompletion, or with stream=True an iterator of chunks."""
        coro = self._client.chat.completions.create(model=model, messages=messages, stream=stream, **params)
        return _sync(self._loop, self._loop.run(coro))

    def parse(self, *, model: str, messages: Iterable[Any], **params: Any) -> ParsedChatCompletion[Any]:
        """As `openai`'s parse(): response_format may be a pydantic model; see AsyncChatCompletions.parse."""
        return self._loop.run(self._client.chat.completions.parse(model=model, messages=messages, **params))


class Chat:
    def __init__(self, client: AsyncOpenAI, loop: LoopThread) -> None:
        self.completions = ChatCompletions(client, loop)


class Completions:
    def __init__(self, client: AsyncOpenAI, loop: LoopThread) -> None:
        self._client = client
        self._loop = loop

    def create(
        self, *, model: str, prompt: Any, stream: bool = False, **params: Any
    ) -> Completion | ChunkStream[Completion]:
        coro = self._client.completions.create(model=model, prompt=prompt, stream=stream, **params)
        return _sync(self._loop, self._loop.run(coro))


class Models:
    def __init__(self, client: AsyncOpenAI, loop: LoopThread) -> None:
        self._client = client
        self._loop = loop

    def list(self, **transport: Any) -> SyncPage[Model]:
        page = self._loop.run(_resolved(self._client.models.list(**transport)))
        return SyncPage[Model](data=page.data, object="list")

    def retrieve(self, model: str, **transport: Any) -> Model:
        return self._loop.run(self._client.models.retrieve(model, **transport))


class OpenAI(ClientSettings):
    """In-process `openai.OpenAI`: `OpenAI(model=PATH_OR_NAME)` loads the model,
    `OpenAI(pipeline=pipe)` shares a Pipeline's engine. The HTTP arguments of the real
    client (api_key, base_url, timeout, ...) are accepted and readable as attributes;
    `timeout` bounds each request (APITimeoutError past it)."""

    def __init__(
        self,
        model: str | Path | None = None,
        backend_config: TurbomindEngineConfig | None = None,
        chat_template_config: ChatTemplateConfig | None = None,
        *,
        pipeline: Pipeline | None = None,
        model_name: str | None = None,
        **http_args: Any,
    ) -> None:
        options = ClientOptions.from_args(http_args)
        self._source = EngineSource(model, backend_config, chat_template_config, model_name, pipeline, http_args)
        self._async = AsyncOpenAI(pipeline=self._source.pipeline)
        self._loop = LoopThread("lmdeploy-sdk-openai")
        self._owner = True
        self._use_options(options)

    def _use_options(self, options: ClientOptions) -> None:
        self._async = self._async.with_options(**options.as_args())
        self.chat = Chat(self._async, self._loop)
        self.completions = Completions(self._async, self._loop)
        self.models = Models(self._async, self._loop)
        self.embeddings = self._async.embeddings

    @property
    def options(self) -> ClientOptions:
        """The real client's settings (api_key, base_url, timeout, ...), as attributes too."""
        return self._async.options

    @property
    def pipeline(self) -> Pipeline:
        return self._source.pipeline

    @property
    def model_name(self) -> str:
        """The name requests must give as `model` (what `models.list()` reports)."""
        return self._async.model_name

    def end_session(self, session_id: int) -> None:
        """Free the KV cache kept for requests sent with `session_id` (an lmdeploy extension,
        as `/v1/chat/interactive` with an empty prompt ends a session on the server)."""
        self._loop.run(self._async.end_session(session_id))

    def close(self) -> None:
        """Stop running requests and the loop thread; close the engine if this client loaded it.
        (A client from with_options leaves both to the one it came from.)"""
        if self._owner:
            self._loop.close()
            self._source.close()

    def __enter__(self) -> OpenAI:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
