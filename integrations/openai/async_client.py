"""`AsyncOpenAI`: `openai.AsyncOpenAI`'s call surface, answered by an in-process engine."""
from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from openai.pagination import AsyncPage
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from lmdeploy_sdk.integrations.openai.api_errors import status_error
from lmdeploy_sdk.integrations.openai.engine_source import EngineSource
from lmdeploy_sdk.integrations.openai.in_process_api import InProcessAPI
from lmdeploy_sdk.integrations.openai.streams import AsyncChunkStream
from lmdeploy_sdk.messages import ChatTemplateConfig, TurbomindEngineConfig
from lmdeploy_sdk.sync_pipeline import Pipeline


class AsyncChatCompletions:
    def __init__(self, api: InProcessAPI) -> None:
        self._api = api

    async def create(
        self, *, model: str, messages: Iterable[Any], stream: bool = False, **params: Any
    ) -> ChatCompletion | AsyncChunkStream[ChatCompletionChunk]:
        """As `openai`'s create(): the OpenAI fields, the server's extras (top_k, session_id, ...)
        directly or in extra_body; a ChatCompletion, or with stream=True an async iterator of chunks."""
        return await self._api.chat_completions({"model": model, "messages": messages, "stream": stream, **params})


class AsyncChat:
    def __init__(self, api: InProcessAPI) -> None:
        self.completions = AsyncChatCompletions(api)


class AsyncCompletions:
    def __init__(self, api: InProcessAPI) -> None:
        self._api = api

    async def create(
        self, *, model: str, prompt: Any, stream: bool = False, **params: Any
    ) -> Completion | AsyncChunkStream[Completion]:
        return await self._api.completions({"model": model, "prompt": prompt, "stream": stream, **params})


class AsyncModelList:
    """As openai's AsyncPaginator: `await` it for the page, or `async for` over the models."""

    def __init__(self, models: list[Model]) -> None:
        self._page = AsyncPage[Model](data=models, object="list")

    def __await__(self) -> Generator[Any, None, AsyncPage[Model]]:
        return self._get().__await__()

    async def _get(self) -> AsyncPage[Model]:
        return self._page

    async def __aiter__(self) -> AsyncIterator[Model]:
        for model in self._page.data:
            yield model


class AsyncModels:
    def __init__(self, api: InProcessAPI) -> None:
        self._api = api

    def list(self, **_transport: Any) -> AsyncModelList:
        return AsyncModelList(self._api.models())

    async def retrieve(self, model: str, **_transport: Any) -> Model:
        for card in self._api.models():
            if card.id == model:
                return card
        raise status_error(404, f"model {model!r} does not exist", f"/models/{model}", "model", "model_not_found")


class AsyncOpenAI:
    """In-process `openai.AsyncOpenAI`: `OpenAI(model=PATH_OR_NAME)` loads the model,
    `OpenAI(pipeline=pipe)` shares a Pipeline's engine. The HTTP arguments of the real
    client (api_key, base_url, timeout, ...) are accepted and unused."""

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
        self._source = EngineSource(model, backend_config, chat_template_config, model_name, pipeline, http_args)
        api = InProcessAPI(self._source.engine)
        self.chat = AsyncChat(api)
        self.completions = AsyncCompletions(api)
        self.models = AsyncModels(api)

    @property
    def pipeline(self) -> Pipeline:
        return self._source.pipeline

    @property
    def model_name(self) -> str:
        """The name requests must give as `model` (what `models.list()` reports)."""
        return self._source.engine.model_name

    async def end_session(self, session_id: int) -> None:
        """Free the KV cache kept for requests sent with `session_id` (an lmdeploy extension,
        as `/v1/chat/interactive` with an empty prompt ends a session on the server)."""
        await self._source.engine.end_session(session_id)

    async def close(self) -> None:
        """Close the engine if this client loaded it (one given as pipeline= stays open)."""
        self._source.close()

    async def __aenter__(self) -> AsyncOpenAI:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

