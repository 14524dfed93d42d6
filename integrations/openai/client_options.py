"""The real client's connection settings (api_key, base_url, timeout, max_retries, ...).

They are kept so code that reads them, or derives a client with `with_options(...)`,
runs unchanged. In-process only `timeout` acts: a request that takes longer (a stream:
a wait for its next chunk) is aborted and raises `openai.APITimeoutError`, as over HTTP.
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import os
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from typing_extensions import Self

import openai

from lmdeploy_sdk.integrations.openai.api_errors import IN_PROCESS_URL, http, request_at

T = TypeVar("T")

# Arguments of `openai.OpenAI(...)` that configure HTTP: accepted and kept so ported code runs.
HTTP_CLIENT_ARGS = ("api_key", "organization", "project", "base_url", "websocket_base_url", "timeout",
                    "max_retries", "default_headers", "default_query", "http_client")


def _given(value: Any) -> bool:
    return value is not None and not isinstance(value, (openai.NotGiven, getattr(openai, "Omit", openai.NotGiven)))


@dataclasses.dataclass(frozen=True)
class ClientOptions:
    api_key: str
    base_url: Any  # the `openai` client's URL type
    timeout: Any  # seconds, an httpx Timeout, or None (no limit)
    max_retries: int
    organization: str | None = None
    project: str | None = None
    websocket_base_url: str | None = None
    default_headers: Mapping[str, str] | None = None
    default_query: Mapping[str, object] | None = None
    http_client: Any = None

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ClientOptions:
        """openai.OpenAI's defaults (its environment variables too) for what is not given."""
        unknown = sorted(set(args) - set(HTTP_CLIENT_ARGS))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {unknown}; an in-process client takes model=, "
                            "backend_config=, chat_template_config=, pipeline=, model_name= and openai's "
                            f"{list(HTTP_CLIENT_ARGS)}")
        given = {k: v for k, v in args.items() if _given(v) or (k == "timeout" and v is None)}
        base_url = given.pop("base_url", None) or os.environ.get("OPENAI_BASE_URL") or f"{IN_PROCESS_URL}/v1"
        return cls(
            api_key=given.pop("api_key", None) or os.environ.get("OPENAI_API_KEY") or "none",
            base_url=http.URL(str(base_url).rstrip("/") + "/"),
            timeout=given.pop("timeout", openai.DEFAULT_TIMEOUT),
            max_retries=given.pop("max_retries", openai.DEFAULT_MAX_RETRIES),
            **given,
        )

    def as_args(self) -> dict[str, Any]:
        """These options as the client's keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> ClientOptions:
        """These options with `changes` (the arguments of with_options / copy)."""
        return ClientOptions.from_args({**self.as_args(), **changes})


class ClientSettings:
    """The real client's settings as attributes, and `with_options` / `copy`. A client class
    provides `options`, `_owner` (whether close() closes what it created) and
    `_use_options` (take new options and rebuild its resources)."""

    options: ClientOptions
    _owner: bool

    def _use_options(self, options: ClientOptions) -> None:
        raise NotImplementedError

    def with_options(self, **changes: Any) -> Self:
        """A client on the same engine with some settings changed (e.g. timeout=5), as openai's
        with_options / copy; closing it leaves the engine (and loop) to the client it came from."""
        clone = copy.copy(self)
        clone._owner = False
        clone._use_options(self.options.replace(**changes))
        return clone

    def copy(self, **changes: Any) -> Self:
        return self.with_options(**changes)

    api_key = property(lambda self: self.options.api_key)
    base_url = property(lambda self: self.options.base_url)
    timeout = property(lambda self: self.options.timeout)
    max_retries = property(lambda self: self.options.max_retries)
    organization = property(lambda self: self.options.organization)
    project = property(lambda self: self.options.project)


def timeout_seconds(timeout: Any) -> float | None:
    """The limit a request waits for its answer: a number, an httpx Timeout's read timeout, or None."""
    if timeout is None:
        return None
    if isinstance(timeout, (int, float)):
        return float(timeout)
    read = getattr(timeout, "read", None)
    return None if read is None else float(read)


def request_timeout(params: dict[str, Any], options: ClientOptions) -> float | None:
    """This call's limit: its own `timeout=` if given, else the client's."""
    own = params.get("timeout", openai.NOT_GIVEN)
    return timeout_seconds(own if own is None or _given(own) else options.timeout)


async def within(awaitable: Awaitable[T], seconds: float | None, path: str) -> T:
    """Await, or after `seconds` cancel it (the engine aborts the request) and raise APITimeoutError."""
    if seconds is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise openai.APITimeoutError(request=request_at(path)) from None
