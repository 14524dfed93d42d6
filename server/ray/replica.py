"""EngineReplica: one engine behind the same Litestar app `serve api_server` runs."""
from __future__ import annotations

import logging
from typing import AsyncIterator

import msgspec
from ray import serve

from lmdeploy_sdk.messages import TurbomindEngineConfig
from lmdeploy_sdk.server.ray.asgi_call import InProcessApp
from lmdeploy_sdk.server.ray.forward import (INTERACTIVE_ROUTE, REPLICA_HEADER, REPLICA_MESSAGE, SESSION_MESSAGE,
                                             ForwardedRequest, json_messages)
from lmdeploy_sdk.server.settings import ServerSettings

log = logging.getLogger("lmdeploy_sdk.server")


def session_lost_answer(owner: str, replica: str) -> tuple[dict, dict]:
    from lmdeploy_sdk.server.errors import error_body

    message = (f"this session was held by replica {owner}, which is gone (it failed or was scaled down); its "
               "conversation is lost: send the whole conversation again to start over under this session id")
    body = msgspec.json.encode(error_body(410, message, "session_id", "session_lost"))
    return json_messages(410, body, (REPLICA_HEADER, replica.encode()))


def _opened_session(first_body: bytes) -> int | None:
    """The session id an /v1/chat/interactive answer names (its first JSON line)."""
    line = first_body.split(b"\n", 1)[0]
    try:
        sid = msgspec.json.decode(line).get("session_id")
    except (msgspec.DecodeError, AttributeError):
        return None
    return sid if type(sid) is int else None


class EngineReplica:
    """A Ray Serve deployment class: `handle(request)` streams the app's ASGI messages,
    first a REPLICA_MESSAGE naming this replica."""

    async def __init__(self, model: str, engine_config: TurbomindEngineConfig, settings: ServerSettings,
                       model_name: str | None = None) -> None:
        from lmdeploy_sdk.async_engine import AsyncEngine
        from lmdeploy_sdk.server.app import create_app

        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self._served_by = (REPLICA_HEADER, self.replica_id.encode())
        app = create_app(lambda: AsyncEngine(model, engine_config, model_name=model_name), settings)
        self._app = InProcessApp(app)
        await self._app.start()
        log.info("replica %s: %s loaded", self.replica_id, model)

    async def handle(self, request: ForwardedRequest) -> AsyncIterator[dict]:
        yield {"type": REPLICA_MESSAGE, "replica": self.replica_id}
        if self.replica_id in request.exclude:  # already asked (the /metrics fan-out)
            for message in json_messages(204, b"", self._served_by):
                yield message
            return
        if request.owner is not None and request.owner != self.replica_id:
            for message in session_lost_answer(request.owner, self.replica_id):
                yield message
            return
        watch_session = request.path == INTERACTIVE_ROUTE
        async for message in self._app.request(request.asgi_scope(), request.body):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self._served_by]}
            yield message
            if watch_session and message["type"] == "http.response.body" and message.get("body"):
                watch_session = False
                sid = _opened_session(message["body"])
                if sid is not None:
                    yield {"type": SESSION_MESSAGE, "session_id": sid}

    async def __del__(self) -> None:
        """Ray calls this when the replica stops (after its graceful drain): close the engine."""
        app = getattr(self, "_app", None)  # absent when __init__ failed
        if app is not None:
            await app.stop()
