"""Operational routes: health, Prometheus metrics, the chat page, and the OpenAPI schema where
FastAPI-based servers (LMDeploy's, vLLM's) serve it."""
from __future__ import annotations

from pathlib import Path

from importlib.util import find_spec

from litestar import Request, Response, get
from litestar.openapi import ResponseSpec
from litestar.response import File, Redirect

from lmdeploy_sdk.server.context import ContextDep
from lmdeploy_sdk.server.schemas.native import HealthResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
CHAT_PAGE = STATIC_DIR / "index.html"
SWAGGER_UI_ASSETS = "/docs/assets"


def swagger_ui_dir() -> Path | None:
    """Swagger UI's files from their packaged distribution (swagger-ui-py, a `serve`
    dependency; located, not imported), so /docs renders offline; None if it is missing."""
    spec = find_spec("swagger_ui")
    return Path(spec.origin).parent / "static" if spec is not None and spec.origin else None


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


@get("/openapi.json", include_in_schema=False)
async def openapi_json(request: Request) -> Response:
    return Response(request.app.openapi_schema.to_schema(), media_type="application/json")


@get("/", include_in_schema=False)
async def docs_redirect() -> Redirect:
    return Redirect("/docs", status_code=302)


@get("/", include_in_schema=False)
async def chat_page_at_root() -> File:
    return File(CHAT_PAGE, content_disposition_type="inline", media_type="text/html")
