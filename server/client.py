"""`APIClient`: a small synchronous HTTP client for the API server (LMDeploy's `APIClient` surface).

The `*_v1` methods are generators of plain dicts (one per streamed chunk, or the
single answer); `client.chat.completions.create(...)` mirrors the `openai`
package's call and returns typed objects (attribute access) without needing it.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import msgspec

from lmdeploy_sdk.server.schemas.chat import ChatCompletionChunk, ChatCompletionResponse
from lmdeploy_sdk.server.schemas.completions import CompletionChunk, CompletionResponse


class APIClientError(RuntimeError):
    """The server answered with an error; `status` is the HTTP status, `body` its JSON (if any)."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body


def _raise_for_error(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    resp.read()
    try:
        body = resp.json()
        message = body["error"]["message"]
    except (ValueError, KeyError, TypeError):
        body, message = None, resp.text or resp.reason_phrase
    raise APIClientError(resp.status_code, message, body)


def _body(fixed: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Request JSON: the named arguments that were given, plus any extra fields as they are."""
    return {**{k: v for k, v in fixed.items() if v is not None}, **extra}


class _Completions:
    def __init__(self, client: "APIClient", chat: bool) -> None:
        self._client = client
        self._chat = chat

    def create(self, *, model: str | None = None, stream: bool = False, **kwargs: Any) -> Any:
        """Like `openai` client's create(): a ChatCompletionResponse / CompletionResponse, or with
        stream=True an iterator of chunks."""
        body = {"model": model or self._client.available_models[0], "stream": stream, **kwargs}
        path = "/v1/chat/completions" if self._chat else "/v1/completions"
        if not stream:
            full = ChatCompletionResponse if self._chat else CompletionResponse
            return msgspec.convert(next(self._client._post(path, body)), full)
        chunk = ChatCompletionChunk if self._chat else CompletionChunk
        return (msgspec.convert(c, chunk) for c in self._client._post(path, body, stream="sse"))


class _Chat:
    def __init__(self, client: "APIClient") -> None:
        self.completions = _Completions(client, chat=True)


class APIClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float | None = 600.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.chat = _Chat(self)
        self.completions = _Completions(self, chat=False)

    # ---- plumbing --------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any], stream: str | None = None) -> Iterator[dict[str, Any]]:
        """POST JSON; yields the answer, or each event of an SSE ('sse') or NDJSON ('ndjson') stream."""
        if stream is None:
            resp = self._http.post(path, json=body)
            _raise_for_error(resp)
            yield resp.json()
            return
        with self._http.stream("POST", path, json=body) as resp:
            _raise_for_error(resp)
            for line in resp.iter_lines():
                if stream == "sse":
                    if not line.startswith("data:"):
                        continue
                    line = line[5:].strip()
                    if line == "[DONE]":
                        return
                if not line.strip():
                    continue
                event = json.loads(line)
                if "error" in event:
                    raise APIClientError(resp.status_code, event["error"].get("message", ""), event)
                yield event

    # ---- LMDeploy's APIClient surface ------------------------------------------------
    def list_models(self) -> list[str]:
        resp = self._http.get("/v1/models")
        _raise_for_error(resp)
        return [m["id"] for m in resp.json()["data"]]

    @property
    def available_models(self) -> list[str]:
        return self.list_models()

    def encode(
        self, input: str | list[str], do_preprocess: bool = False, add_bos: bool = True
    ) -> tuple[list[int] | list[list[int]], int | list[int]]:
        """(input_ids, length) of a text or of each text in a list."""
        body = next(self._post("/v1/encode", {"input": input, "do_preprocess": do_preprocess, "add_bos": add_bos}))
        return body["input_ids"], body["length"]

    def chat_completions_v1(
        self, model: str, messages: str | list[dict[str, Any]], temperature: float = 0.7, top_p: float = 1.0,
        logprobs: bool = False, top_logprobs: int | None = None, n: int = 1, max_tokens: int | None = None,
        stop: str | list[str] | None = None, stream: bool = False, repetition_penalty: float = 1.0,
        session_id: int | None = None, ignore_eos: bool = False, skip_special_tokens: bool = True,
        top_k: int = 40, min_p: float = 0.0, seed: int | None = None, **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        body = _body(dict(
            model=model, messages=messages, temperature=temperature, top_p=top_p, logprobs=logprobs,
            top_logprobs=top_logprobs, n=n, max_tokens=max_tokens, stop=stop, stream=stream,
            repetition_penalty=repetition_penalty, session_id=session_id, ignore_eos=ignore_eos,
            skip_special_tokens=skip_special_tokens, top_k=top_k, min_p=min_p, seed=seed,
        ), kwargs)
        yield from self._post("/v1/chat/completions", body, "sse" if stream else None)

    def completions_v1(
        self, model: str, prompt: str | list[Any], max_tokens: int | None = 16, temperature: float = 0.7,
        top_p: float = 1.0, n: int = 1, logprobs: int | None = None, echo: bool = False,
        stop: str | list[str] | None = None, stream: bool = False, repetition_penalty: float = 1.0,
        session_id: int | None = None, ignore_eos: bool = False, skip_special_tokens: bool = True,
        top_k: int = 40, min_p: float = 0.0, seed: int | None = None, **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        body = _body(dict(
            model=model, prompt=prompt, max_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n,
            logprobs=logprobs, echo=echo, stop=stop, stream=stream, repetition_penalty=repetition_penalty,
            session_id=session_id, ignore_eos=ignore_eos, skip_special_tokens=skip_special_tokens, top_k=top_k,
            min_p=min_p, seed=seed,
        ), kwargs)
        yield from self._post("/v1/completions", body, "sse" if stream else None)

    def chat_interactive_v1(
        self, prompt: str | list[dict[str, Any]], session_id: int = -1, interactive_mode: bool = False,
        stream: bool = False, stop: str | list[str] | None = None, request_output_len: int | None = None,
        top_p: float = 0.8, top_k: int = 40, temperature: float = 0.8, repetition_penalty: float = 1.0,
        ignore_eos: bool = False, skip_special_tokens: bool = True, cancel: bool = False, **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        """One turn of a stateful session; interactive_mode=True keeps it for the next turn."""
        body = _body(dict(
            prompt=prompt, session_id=session_id, interactive_mode=interactive_mode, stream=stream, stop=stop,
            request_output_len=request_output_len, top_p=top_p, top_k=top_k, temperature=temperature,
            repetition_penalty=repetition_penalty, ignore_eos=ignore_eos, skip_special_tokens=skip_special_tokens,
            cancel=cancel,
        ), kwargs)
        yield from self._post("/v1/chat/interactive", body, "ndjson" if stream else None)

    def end_session(self, session_id: int) -> bool:
        """End a session (`DELETE /v1/sessions/{id}`): its running request stops and its KV cache
        is freed. False if the server has no such session (or it is another API key's)."""
        resp = self._http.delete(f"/v1/sessions/{session_id}")
        if resp.status_code == 404:
            return False
        _raise_for_error(resp)
        return True

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "APIClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
