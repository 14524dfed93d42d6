"""Everything one app instance shares between its requests (no module-level state anywhere)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TypeAlias

from litestar.di import NamedDependency

from lmdeploy_sdk.async_engine import AsyncEngine
from lmdeploy_sdk.server.admission import AdmissionLimiter
from lmdeploy_sdk.server.drain import DrainController
from lmdeploy_sdk.server.errors import APIError
from lmdeploy_sdk.server.interactive import Conversation
from lmdeploy_sdk.server.metrics import ServerMetrics
from lmdeploy_sdk.server.settings import ServerSettings

# Session ids the server picks for `session_id=-1`; far from both small user ids and Pipeline's (>= 2**40).
_AUTO_SESSION_BASE = 1 << 50


@dataclass
class InflightRequests:
    """Engine request ids of running API requests, for /abort_request."""

    by_api_id: dict[str, list[str]] = field(default_factory=dict)
    by_session: dict[int, str] = field(default_factory=dict)

    def add(self, api_id: str, engine_ids: list[str], session_id: int | None) -> None:
        self.by_api_id[api_id] = engine_ids
        if session_id is not None:
            self.by_session[session_id] = api_id

    def remove(self, api_id: str, session_id: int | None) -> None:
        self.by_api_id.pop(api_id, None)
        if session_id is not None and self.by_session.get(session_id) == api_id:
            del self.by_session[session_id]


@dataclass
class ServerContext:
    settings: ServerSettings
    limiter: AdmissionLimiter
    drain: DrainController
    metrics: ServerMetrics
    engine_: AsyncEngine | None = None
    inflight: InflightRequests = field(default_factory=InflightRequests)
    conversations: dict[int, Conversation] = field(default_factory=dict)
    _auto_session_ids: itertools.count = field(default_factory=lambda: itertools.count(_AUTO_SESSION_BASE))

    @property
    def engine(self) -> AsyncEngine:
        if self.engine_ is None:
            raise APIError(503, "the model is still loading", code="model_loading")
        return self.engine_

    def new_session_id(self) -> int:
        return next(self._auto_session_ids)

    async def abort(self, api_id: str) -> bool:
        """Abort every choice of a running API request; False if it is not running."""
        engine_ids = self.inflight.by_api_id.get(api_id)
        if engine_ids is None or self.engine_ is None:
            return False
        for rid in engine_ids:
            await self.engine_.abort(rid)
        return True


# How route handlers ask Litestar for the app's context (registered as dependency "ctx").
ContextDep: TypeAlias = NamedDependency[ServerContext]
