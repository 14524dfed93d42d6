"""Operational routes: health, Prometheus metrics, and the chat page."""
from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.openapi import ResponseSpec
from litestar.response import File, Redirect

from lmdeploy_sdk.server.context import ContextDep
from lmdeploy_sdk.server.schemas.native import HealthResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
CHAT_PAGE = STATIC_DIR / "index.html"


@get("/health", responses={200: ResponseSpec(HealthResponse, description="Serving"),
                           503: ResponseSpec(HealthResponse, description="Shutting down")},
     summary="Liveness / readiness")
async def health(ctx: ContextDep) -> Response:
    if ctx.drain.draining:
        return Response(HealthResponse(status="draining"), status_code=503)
    return Response(HealthResponse(status="ok"))


@get("/metrics", media_type="text/plain", summary="Prometheus metrics")
async def metrics(ctx: ContextDep) -> Response:
    body, content_type = ctx.metrics.render()
    return Response(body, media_type=content_type)


@get("/chat", include_in_schema=False)
async def chat_page() -> File:
    return File(CHAT_PAGE, content_disposition_type="inline", media_type="text/html")


@get("/", include_in_schema=False)
async def docs_redirect() -> Redirect:
    return Redirect("/docs", status_code=302)


@get("/", include_in_schema=False)
async def chat_page_at_root() -> File:
    return File(CHAT_PAGE, content_disposition_type="inline", media_type="text/html")
