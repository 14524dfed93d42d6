"""`AsyncOpenAI`: `openai.AsyncOpenAI`'s call surface, answered by an in-process engine."""
from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from openai import omit
from openai._utils import is_given
# openai's own helpers behind its parse(): the same schema conversion and result parsing
from openai.lib._parsing._completions import parse_chat_completion, type_to_response_format_param, validate_input_tools
from openai.pagination import AsyncPage
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ParsedChatCompletion

from lmdeploy_sdk.integrations.openai.api_errors import status_error
from lmdeploy_sdk.integrations.openai.client_options import ClientOptions, ClientSettings, request_timeout
from lmdeploy_sdk.integrations.openai.engine_source import EngineSource
from lmdeploy_sdk.integrations.openai.in_process_api import InProcessAPI
from lmdeploy_sdk.integrations.openai.streams import AsyncChunkStream
from lmdeploy_sdk.messages import ChatTemplateConfig, TurbomindEngineConfig
from lmdeploy_sdk.sync_pipeline import Pipeline


class AsyncChatCompletions:
    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    async def create(
        self, *, model: str, messages: Iterable[Any], stream: bool = False, **params: Any
    ) -> ChatCompletion | AsyncChunkStream[ChatCompletionChunk]:
        """As `openai`'s create(): the OpenAI fields, the server's extras (top_k, session_id, ...)
        directly or in extra_body; a ChatCompletion, or with stream=True an async iterator of chunks.
        `timeout=` (else the client's) bounds the wait, as over HTTP."""
        seconds = request_timeout(params, self._client.options)
        body = {"model": model, "messages": messages, "stream": stream, **params}
        return await self._client.api.chat_completions(body, seconds)


    async def parse(
        self, *, model: str, messages: Iterable[Any], response_format: Any = omit, tools: Any = omit, **params: Any
    ) -> ParsedChatCompletion[Any]:
        """As `openai`'s parse(): response_format may be a pydantic model (sent as a strict JSON
        schema, which decoding then follows), tools may be `openai.pydantic_function_tool(...)`s;
        the answer comes back with `message.parsed` and parsed tool-call arguments."""
        if params.get("stream"):
            raise TypeError("parse() does not stream; use create(stream=True)")
        input_tools = validate_input_tools(tools)
        body: dict[str, Any] = {**params}
        if is_given(response_format):
            body["response_format"] = type_to_response_format_param(response_format)
        if is_given(input_tools):
            body["tools"] = input_tools
        raw = await self.create(model=model, messages=messages, **body)
        return parse_chat_completion(response_format=response_format, input_tools=input_tools, chat_completion=raw)


class AsyncChat:
    def __init__(self, client: AsyncOpenAI) -> None:
        self.completions = AsyncChatCompletions(client)


class AsyncCompletions:
    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    async def create(
        self, *, model: str, prompt: Any, stream: bool = False, **params: Any
    ) -> Completion | AsyncChunkStream[Completion]:
        seconds = request_timeout(params, self._client.options)
        body = {"model": model, "prompt": prompt, "stream": stream, **params}
        return await self._client.api.completions(body, seconds)


class MissingRoute:
    """A resource of the real client whose route the API server does not have (embeddings):
    calls raise what the real client raises for the server's 404."""

    def __init__(self, path: str) -> None:
        self._path = path

    def create(self, **_params: Any) -> Any:
        raise status_error(404, f"{self._path} is not served: this server has no such route", self._path,
                           code="not_found")


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
    def __init__(self, client: AsyncOpenAI) -> None:
        self._api = client.api

    def list(self, **_transport: Any) -> AsyncModelList:
        return AsyncModelList(self._api.models())

    async def retrieve(self, model: str, **_transport: Any) -> Model:
        for card in self._api.models():
            if card.id == model:
                return card
        raise status_error(404, f"model {model!r} does not exist", f"/models/{model}", "model", "model_not_found")


class AsyncOpenAI(ClientSettings):
    """In-process `openai.AsyncOpenAI`: `OpenAI(model=PATH_OR_NAME)` loads the model,
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
        self.options = ClientOptions.from_args(http_args)
        self._source = EngineSource(model, backend_config, chat_template_config, model_name, pipeline, http_args)
        self._owner = True
        self.api = InProcessAPI(self._source.engine)
        self._use_options(self.options)

    def _use_options(self, options: ClientOptions) -> None:
        self.options = options
        self.chat = AsyncChat(self)
        self.completions = AsyncCompletions(self)
        self.models = AsyncModels(self)
        self.embeddings = MissingRoute("/embeddings")

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
        if self._owner:
            self._source.close()

    async def __aenter__(self) -> AsyncOpenAI:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

