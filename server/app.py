"""The Litestar app factory: routes, error map, auth, host and body checks, CORS, metrics,
and the lifecycle of the engine and the session store."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

import anyio.to_thread
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from lmdeploy_sdk.async_engine import AsyncEngine
from lmdeploy_sdk.server.access_log import AccessLogMiddleware
from lmdeploy_sdk.server.admission import AdmissionLimiter
from lmdeploy_sdk.server.allowed_hosts import AllowedHostsMiddleware
from lmdeploy_sdk.server.auth import DOCS_PREFIX, APIKeyMiddleware
from lmdeploy_sdk.server.context import ServerContext
from lmdeploy_sdk.server.drain import DrainController
from lmdeploy_sdk.server.errors import EXCEPTION_HANDLERS
from lmdeploy_sdk.server.json_body import JSONRequest
from lmdeploy_sdk.server.metrics import ServerMetrics
from lmdeploy_sdk.server.routes import native_api, openai_api, service_api
from lmdeploy_sdk.server.sessions import SessionStore
from lmdeploy_sdk.server.settings import ServerSettings
from lmdeploy_sdk.version import __version__

EngineFactory = Callable[[], AsyncEngine]
log = logging.getLogger("lmdeploy_sdk.server")
# How often, at most, idle sessions are checked against their TTL.
_SWEEP_PERIOD_S = 30.0


def _engine_lifespan(ctx: ServerContext, engine: AsyncEngine | EngineFactory):
    """Build the engine at startup (off the event loop) and close it at shutdown; in between,
    end sessions idle past their TTL.

    A ready AsyncEngine is used as is and left open: its owner closes it.
    """

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        owned = not isinstance(engine, AsyncEngine)
        ctx.engine_ = await anyio.to_thread.run_sync(engine) if owned else engine
        tokenizer = ctx.engine_.tokenizer
        await anyio.to_thread.run_sync(lambda: tokenizer.max_token_bytes)  # computed once, off the loop
        sweeper = asyncio.ensure_future(_expire_sessions(ctx))
        try:
            yield
        finally:
            sweeper.cancel()
            ctx.drain.close()
            if owned:
                await anyio.to_thread.run_sync(ctx.engine_.close)
            ctx.engine_ = None

    return lifespan


async def _expire_sessions(ctx: ServerContext) -> None:
    period = min(ctx.settings.session_ttl_s / 4, _SWEEP_PERIOD_S)
    while True:
        await asyncio.sleep(period)
        expired = ctx.expire_sessions()
        if expired:
            log.info("ended %d session(s) idle for more than %.0f s", expired, ctx.settings.session_ttl_s)


def _swagger_page(packaged: bool) -> SwaggerRenderPlugin:
    """/docs from the packaged Swagger UI files; without them (swagger-ui-py not installed),
    Litestar's default, which fetches them from a CDN."""
    if not packaged:
        log.warning("swagger-ui-py is not installed: /docs loads Swagger UI from a CDN (blank offline)")
        return SwaggerRenderPlugin()
    assets = service_api.SWAGGER_UI_ASSETS
    return SwaggerRenderPlugin(
        js_url=f"{assets}/swagger-ui-bundle.js",
        css_url=f"{assets}/swagger-ui.css",
        standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{assets}/favicon-32x32.png'>",
    )


def create_app(engine: AsyncEngine | EngineFactory, settings: ServerSettings | None = None) -> Litestar:
    """An OpenAI-compatible API server for one model.

    engine: a ready AsyncEngine (shared, not closed by the app) or a callable that builds one
    when the app starts (closed when it stops).
    """
    settings = settings or ServerSettings()
    ctx = ServerContext(
        settings=settings,
        limiter=AdmissionLimiter(settings.max_concurrent_requests, settings.retry_after_s),
        drain=DrainController(),
        metrics=ServerMetrics(lambda: ctx.engine_.stats() if ctx.engine_ is not None else None,
                              lambda: len(ctx.sessions)),
        sessions=SessionStore(settings.max_sessions, settings.session_ttl_s),
    )
    handlers = [*openai_api.ROUTES, *native_api.ROUTES, service_api.health, service_api.chat_page,
                service_api.openapi_json,
                create_static_files_router(path="/static", directories=[service_api.STATIC_DIR],
                                           include_in_schema=False)]
    swagger_dir = service_api.swagger_ui_dir()
    if swagger_dir is not None:
        handlers.append(create_static_files_router(path=service_api.SWAGGER_UI_ASSETS, directories=[swagger_dir],
                                                   include_in_schema=False))
    handlers.append(service_api.chat_page_at_root if settings.chat_page_at_root else service_api.docs_redirect)
    if not settings.disable_metrics:
        handlers.append(service_api.metrics)
    middleware = [DefineMiddleware(AccessLogMiddleware, observe=ctx.metrics.observe_request)]
    if settings.allowed_hosts:
        middleware.append(DefineMiddleware(AllowedHostsMiddleware, allowed_hosts=settings.allowed_hosts))
    if settings.api_keys:
        middleware.append(DefineMiddleware(APIKeyMiddleware, api_keys=settings.api_keys))
    cors = None
    if settings.allow_origins:
        cors = CORSConfig(
            allow_origins=list(settings.allow_origins),
            allow_credentials=settings.allow_credentials,
            allow_methods=list(settings.allow_methods),
            allow_headers=list(settings.allow_headers),
        )
    app = Litestar(
        route_handlers=handlers,
        dependencies={"ctx": Provide(lambda: ctx, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=middleware,
        request_class=JSONRequest,
        cors_config=cors,
        lifespan=[_engine_lifespan(ctx, engine)],
        openapi_config=OpenAPIConfig(
            title="lmdeploy-sdk API server",
            version=__version__,
            description="OpenAI-compatible API with LMDeploy's extras",
            path=DOCS_PREFIX,
            render_plugins=[_swagger_page(swagger_dir is not None)],
        ),
        logging_config=None,
    )
    app.state.ctx = ctx
    return app


def server_context(app: Litestar) -> ServerContext:
    """The shared state of an app made by create_app (for the launcher and tests)."""
    return app.state.ctx
