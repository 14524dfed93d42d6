"""The chat page on its own, in front of a running API server (`serve gradio URL`).

The page talks to its own origin; this app serves it and forwards the two API
calls it makes to the upstream server, streaming answers through unchanged.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import httpx
from litestar import Litestar, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency, Provide
from litestar.response import Stream
from litestar.static_files import create_static_files_router

from lmdeploy_sdk.server.errors import error_body
from lmdeploy_sdk.server.routes.service_api import STATIC_DIR, chat_page, chat_page_at_root

_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


class _Upstream:
    """The HTTP client of one proxy app (opened in its lifespan)."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.http: httpx.AsyncClient | None = None

    def headers(self, request: Request) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        auth = request.headers.get("authorization")
        if auth:
            headers["authorization"] = auth
        elif self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    async def forward(self, request: Request, method: str, path: str) -> Response:
        assert self.http is not None, "the proxy's lifespan has not started"
        body = await request.body() if method == "POST" else None
        try:
            upstream = await self.http.send(
                self.http.build_request(method, path, content=body, headers=self.headers(request)), stream=True
            )
        except httpx.HTTPError as e:
            return Response(error_body(502, f"the API server at {self.url} is unreachable: {e}",
                                       code="upstream_unreachable"), status_code=502)
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        return Stream(upstream.aiter_raw(), status_code=upstream.status_code, headers=headers,
                      background=BackgroundTask(upstream.aclose))


def create_page_app(upstream_url: str, api_key: str | None = None) -> Litestar:
    """Serve the chat page at `/` and forward its API calls to `upstream_url`."""
    upstream = _Upstream(upstream_url, api_key)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with httpx.AsyncClient(base_url=upstream.url, timeout=httpx.Timeout(None, connect=10.0)) as http:
            upstream.http = http
            yield
            upstream.http = None

    @get("/v1/models")
    async def models(request: Request, up: NamedDependency[_Upstream]) -> Response:
        return await up.forward(request, "GET", "/v1/models")

    @post("/v1/chat/completions")
    async def chat(request: Request, up: NamedDependency[_Upstream]) -> Response:
        return await up.forward(request, "POST", "/v1/chat/completions")

    return Litestar(
        route_handlers=[models, chat, chat_page, chat_page_at_root,
                        create_static_files_router(path="/static", directories=[STATIC_DIR])],
        dependencies={"up": Provide(lambda: upstream, sync_to_thread=False)},
        lifespan=[lifespan],
        logging_config=None,
        openapi_config=None,
    )
