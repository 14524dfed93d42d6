"""Everything one app instance shares between its requests (no module-level state anywhere)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TypeAlias

from litestar import Request
from litestar.di import NamedDependency

from lmdeploy_sdk.async_engine import AsyncEngine
from lmdeploy_sdk.server.admission import AdmissionLimiter
from lmdeploy_sdk.server.auth import bearer_token
from lmdeploy_sdk.server.drain import DrainController
from lmdeploy_sdk.server.errors import APIError
from lmdeploy_sdk.server.metrics import ServerMetrics
from lmdeploy_sdk.server.sessions import SessionBusy, SessionEntry, SessionNotFound, SessionStore
from lmdeploy_sdk.server.settings import ServerSettings


@dataclass
class InflightRequests:
    """Engine request ids and owner of each running API request, for /abort_request."""

    by_api_id: dict[str, tuple[list[str], str | None]] = field(default_factory=dict)
    by_session: dict[int, str] = field(default_factory=dict)

    def add(self, api_id: str, engine_ids: list[str], session_id: int | None, owner: str | None) -> None:
        self.by_api_id[api_id] = (engine_ids, owner)
        if session_id is not None:
            self.by_session[session_id] = api_id

    def remove(self, api_id: str, session_id: int | None) -> None:
        self.by_api_id.pop(api_id, None)
        if session_id is not None and self.by_session.get(session_id) == api_id:
            del self.by_session[session_id]

    def owned_by(self, owner: str | None) -> list[str]:
        return [api_id for api_id, (_, who) in self.by_api_id.items() if who == owner]


@dataclass
class ServerContext:
    settings: ServerSettings
    limiter: AdmissionLimiter
    drain: DrainController
    metrics: ServerMetrics
    sessions: SessionStore
    engine_: AsyncEngine | None = None
    inflight: InflightRequests = field(default_factory=InflightRequests)

    @property
    def engine(self) -> AsyncEngine:
        if self.engine_ is None:
            raise APIError(503, "the model is still loading", code="model_loading")
        return self.engine_

    def owner(self, request: Request) -> str | None:
        """Who a request acts for: a digest of its API key, or None on a keyless server
        (where sessions and requests are shared by every client)."""
        if not self.settings.api_keys:
            return None
        token = bearer_token(request.scope.get("headers", [])) or b""
        return hashlib.sha256(token).hexdigest()

    def session(self, session_id: int, owner: str | None) -> SessionEntry | None:
        """The owner's session, or None; another owner's session answers 404 like a missing one."""
        try:
            return self.sessions.get(session_id, owner)
        except SessionNotFound as e:
            raise session_not_found(session_id) from e

    def open_session(self, session_id: int, owner: str | None) -> None:
        """A request starts on the session (opened if new); sessions over the cap are ended."""
        try:
            evicted = self.sessions.acquire(session_id, owner)
        except SessionNotFound as e:
            raise session_not_found(session_id) from e
        except SessionBusy as e:
            raise APIError(409, str(e), param="session_id", code="session_busy") from e
        self._end_in_engine(evicted)

    def release_session(self, session_id: int, end: bool) -> None:
        """The request on the session ended; `end` ends the session too."""
        self._end_in_engine(self.sessions.release(session_id))
        if end:
            self.end_session(session_id)

    def end_session(self, session_id: int) -> None:
        self.sessions.remove(session_id)
        self._end_in_engine([session_id])

    def expire_sessions(self) -> int:
        expired = self.sessions.expire()
        self._end_in_engine(expired)
        return len(expired)

    def _end_in_engine(self, session_ids: list[int]) -> None:
        if self.engine_ is not None:
            for sid in session_ids:
                self.engine_.end_session_nowait(sid)

    async def abort(self, api_id: str, owner: str | None) -> bool:
        """Abort every choice of the owner's running API request; False if there is none."""
        running = self.inflight.by_api_id.get(api_id)
        if running is None or running[1] != owner or self.engine_ is None:
            return False
        for rid in running[0]:
            await self.engine_.abort(rid)
        return True


def session_not_found(session_id: int) -> APIError:
    return APIError(404, f"session {session_id} does not exist (or has ended)", param="session_id",
                    code="session_not_found")


# How route handlers ask Litestar for the app's context (registered as dependency "ctx").
ContextDep: TypeAlias = NamedDependency[ServerContext]
