"""`LMDeploy`: a LangChain text-completion LLM on the in-process engine or on an api_server."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from pydantic import ConfigDict

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.llms import LangSmithParams
from langchain_core.outputs import GenerationChunk, LLMResult

from lmdeploy_sdk.integrations.langchain.engine_params import EngineParams
from lmdeploy_sdk.integrations.langchain.openai_results import PROVIDER, completion_generations, text_chunk, token_usage


class LMDeploy(EngineParams, BaseLLM):
    """Text-completion LLM of lmdeploy-sdk (the prompt is used as is, no chat template).

    In-process: `LMDeploy(model="smollm2-135m-instruct")` or `LMDeploy(pipeline=pipe)`; remote:
    `LMDeploy(base_url="http://127.0.0.1:23333")`. A batch goes to the engine as one request.
    """

    # LangChain's base ignores unknown fields; ours reject them (a typo must not pass silently)
    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = 256

    @property
    def _llm_type(self) -> str:
        return "lmdeploy"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = PROVIDER
        params["ls_model_name"] = kwargs.get("model") or self.display_model_name()
        return params

    def _create_args(self, prompt: str | list[str], stop: list[str] | None, stream: bool,
                     kwargs: dict[str, Any]) -> dict[str, Any]:
        """Arguments of completions.create(); fields go in extra_body (see LMDeployChat)."""
        params = self.request_params(stop, kwargs)
        model = params.pop("model", None) or self.served_model_name
        return {"model": model, "prompt": prompt, "stream": stream, "extra_body": params}

    def _generate(
        self, prompts: list[str], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> LLMResult:
        completion = self.connection().client.completions.create(**self._create_args(prompts, stop, False, kwargs))
        return _result(completion, len(prompts))

    async def _agenerate(
        self, prompts: list[str], stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> LLMResult:
        args = self._create_args(prompts, stop, False, kwargs)
        async with self.connection().async_client() as client:
            return _result(await client.completions.create(**args), len(prompts))

    def _stream(
        self, prompt: str, stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        stream = self.connection().client.completions.create(**self._create_args(prompt, stop, True, kwargs))
        try:
            for chunk in stream:
                piece = text_chunk(chunk)
                if piece is not None:
                    if run_manager is not None:
                        run_manager.on_llm_new_token(piece.text, chunk=piece)
                    yield piece
        finally:
            stream.close()

    async def _astream(
        self, prompt: str, stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        args = self._create_args(prompt, stop, True, kwargs)
        async with self.connection().async_client() as client:
            stream = await client.completions.create(**args)
            try:
                async for chunk in stream:
                    piece = text_chunk(chunk)
                    if piece is not None:
                        if run_manager is not None:
                            await run_manager.on_llm_new_token(piece.text, chunk=piece)
                        yield piece
            finally:
                await stream.close()


def _result(completion: Any, num_prompts: int) -> LLMResult:
    return LLMResult(generations=completion_generations(completion, num_prompts),
                     llm_output={"token_usage": token_usage(completion.usage), "model_name": completion.model})
