"""`LMDeployChat`: a LangChain chat model on the in-process engine or on an api_server."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict

from lmdeploy_sdk.integrations.langchain.engine_params import EngineParams
from lmdeploy_sdk.integrations.langchain.openai_results import (
    PROVIDER,
    chat_result,
    delta_chunk,
    last_chunk,
    openai_messages,
)
from lmdeploy_sdk.integrations.langchain.structured_output import structured_output_runnable


class LMDeployChat(EngineParams, BaseChatModel):
    """Chat model of lmdeploy-sdk.

    In-process: `LMDeployChat(model="smollm2-135m-instruct")` (or a local HF directory, engine
    settings as backend_config=..., or pipeline=pipe to share a loaded engine). Remote:
    `LMDeployChat(base_url="http://127.0.0.1:23333", api_key=...)`.

    Multi-turn: pass the same `session_id` (an int) with each turn of a conversation,
    e.g. `chat.invoke(history, session_id=7)`, and the engine reuses the KV cache of
    the turns before instead of prefilling them again; `end_session(7)` frees it.
    Requests on one session_id must not run at the same time.
    """

    # LangChain's base ignores unknown fields; ours reject them (a typo must not pass silently)
    model_config = ConfigDict(extra="forbid")

    stream_usage: bool = True
    """Ask for token usage when streaming (reported on the last chunk)."""

    @property
    def _llm_type(self) -> str:
        return "lmdeploy-chat"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider=PROVIDER, ls_model_type="chat",
                                 ls_model_name=kwargs.get("model") or self.display_model_name())
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = list(stop or self.stop or [])
        return params

    def _create_args(
        self, messages: list[BaseMessage], stop: list[str] | None, stream: bool, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Arguments of chat.completions.create(); every field goes in extra_body, which both the
        `openai` client and the in-process shim merge into the request body."""
        params = self.request_params(stop, kwargs)
        model = params.pop("model", None) or self.served_model_name
        if stream and self.stream_usage:
            params.setdefault("stream_options", {"include_usage": True})
        return {"model": model, "messages": openai_messages(messages), "stream": stream, "extra_body": params}

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:
        args = self._create_args(messages, stop, False, kwargs)
        return chat_result(self.connection().client.chat.completions.create(**args))

    async def _agenerate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:
        args = self._create_args(messages, stop, False, kwargs)
        async with self.connection().async_client() as client:
            return chat_result(await client.chat.completions.create(**args))

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        args = self._create_args(messages, stop, True, kwargs)
        stream = self.connection().client.chat.completions.create(**args)
        finish, usage, stream_id = None, None, None
        try:
            for chunk in stream:
                stream_id = chunk.id
                usage = chunk.usage or usage
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
                piece = delta_chunk(chunk)
                if piece is not None:
                    if run_manager is not None:
                        run_manager.on_llm_new_token(piece.text, chunk=piece)
                    yield piece
        finally:
            stream.close()
        yield last_chunk(args["model"], finish, usage, stream_id)

    async def _astream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        args = self._create_args(messages, stop, True, kwargs)
        async with self.connection().async_client() as client:
            stream = await client.chat.completions.create(**args)
            finish, usage, stream_id = None, None, None
            try:
                async for chunk in stream:
                    stream_id = chunk.id
                    usage = chunk.usage or usage
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
                    piece = delta_chunk(chunk)
                    if piece is not None:
                        if run_manager is not None:
                            await run_manager.on_llm_new_token(piece.text, chunk=piece)
                        yield piece
            finally:
                await stream.close()
            yield last_chunk(args["model"], finish, usage, stream_id)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer tools to the model (OpenAI `tools`); tool_choice: 'auto', 'none', 'any'/'required'/True
        (must call one), a tool's name, or an OpenAI tool_choice dict."""
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = _openai_tool_choice(tool_choice, formatted)
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Answers parsed into `schema` (a pydantic class, TypedDict or JSON schema), through a
        forced tool call (function_calling) or the server's response_format (json_mode / json_schema)."""
        if kwargs:
            raise ValueError(f"unexpected with_structured_output argument(s) {sorted(kwargs)}")
        return structured_output_runnable(self, schema, method, include_raw, strict)


def _openai_tool_choice(choice: dict[str, Any] | str | bool, tools: list[dict[str, Any]]) -> dict[str, Any] | str:
    if isinstance(choice, dict):
        return choice
    if choice is True or choice == "any":
        return "required"
    if choice in ("auto", "none", "required"):
        return choice
    names = [t["function"]["name"] for t in tools]
    if isinstance(choice, str) and choice in names:
        return {"type": "function", "function": {"name": choice}}
    raise ValueError(f"tool_choice={choice!r} names no bound tool; tools: {names}")
