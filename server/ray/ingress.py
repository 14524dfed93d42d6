"""Ingress: the one HTTP entry. It reads a request whole, names the session it uses, and
hands it to the EngineReplica deployment through a DeploymentHandle; the router picks the
replica (router.py). It learns which replica holds which session from the answers.

The session table lives here, so the application runs one ingress replica (it only moves
bytes; the engines do the work).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Awaitable, Callable

import msgspec
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from lmdeploy_sdk.server.errors import error_body
from lmdeploy_sdk.server.ray.forward import (AUTO_SESSION_ID, REPLICA_MESSAGE, SESSION_MESSAGE, ForwardedRequest,
                                             SessionUse, json_messages, session_use)
from lmdeploy_sdk.server.ray.metrics import merge_metrics
from lmdeploy_sdk.server.ray.sessions import SessionTable

log = logging.getLogger("lmdeploy_sdk.server")

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

# Litestar's default request body limit, which the replicas enforce too; the ingress holds a
# body in memory before forwarding it, so it refuses larger ones first.
MAX_BODY_BYTES = 10_000_000
# The /metrics fan-out asks at most this many replicas.
_MAX_FANOUT = 1024


class _ClientGone(Exception):
    pass


def _error_response(status: int, message: str, code: str, param: str | None = None) -> tuple[dict, dict]:
    return json_messages(status, msgspec.json.encode(error_body(status, message, param, code)))


def _stream_error(content_type: bytes, status: int, message: str, code: str) -> bytes:
    """The last chunk of a streamed answer cut short, in the stream's own framing."""
    payload = msgspec.json.encode(error_body(status, message, None, code))
    if content_type.startswith(b"text/event-stream"):
        return b"data: " + payload + b"\n\n"
    if content_type.startswith(b"application/x-ndjson"):
        return payload + b"\n"
    return b""


def _replica_lost_message(error: BaseException) -> str:
    return ("the replica serving this request stopped before it finished (it failed or was scaled down); "
            f"retry the request ({type(error).__name__})")


class IngressApp:
    """The ASGI app of the Ingress deployment."""

    def __init__(self, engine: DeploymentHandle, session_capacity: int) -> None:
        self._engine = engine.options(stream=True)
        self.sessions = SessionTable(session_capacity)

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            body = await self._read_body(receive)
        except _ClientGone:
            return
        if body is None:
            for message in _error_response(413, f"the request body is over {MAX_BODY_BYTES} bytes",
                                           "request_too_large"):
                await send(message)
            return
        request = ForwardedRequest(
            method=scope["method"], path=scope["path"], query_string=scope.get("query_string", b""),
            headers=tuple((bytes(k), bytes(v)) for k, v in scope.get("headers", ())), body=body,
            scheme=scope.get("scheme", "http"),
            client=tuple(scope["client"]) if scope.get("client") else None,
            server=tuple(scope["server"]) if scope.get("server") else None,
        )
        if request.method == "GET" and request.path == "/metrics":
            await self._metrics(request, send)
        else:
            await self._forward(request, send)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _read_body(receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _forward(self, request: ForwardedRequest, send: Send) -> None:
        use = session_use(request.method, request.path, request.body)
        owner = self.sessions.owner(use.session_id) if use is not None else None
        replica: str | None = None
        status = 0
        content_type = b""
        try:
            async for message in self._engine.handle.remote(replace(request, owner=owner)):
                kind = message["type"]
                if kind == REPLICA_MESSAGE:
                    replica = message["replica"]
                    if use is not None and owner is None and use.session_id != AUTO_SESSION_ID and not use.ends:
                        self.sessions.record(use.session_id, replica)
                elif kind == SESSION_MESSAGE:
                    if use is not None and not use.ends and replica is not None:
                        self.sessions.record(message["session_id"], replica)
                else:
                    if kind == "http.response.start":
                        status = message["status"]
                        content_type = dict(message.get("headers", ())).get(b"content-type", b"")
                    await send(message)
        except RayActorError as e:
            log.warning("replica %s lost during %s %s: %s", replica or "?", request.method, request.path, e)
            await self._cut_short(status, content_type, send, 503, _replica_lost_message(e), "replica_lost")
            return
        except Exception as e:  # a replica's failure must still reach the client as an error
            log.exception("replica %s failed %s %s", replica or "?", request.method, request.path)
            await self._cut_short(status, content_type, send, 502, f"the replica failed: {e}", "replica_error")
            return
        self._after(use, owner, replica, status)

    def _after(self, use: SessionUse | None, owner: str | None, replica: str | None, status: int) -> None:
        if use is None:
            return
        if owner is not None and status == 410:  # session_lost: the id is free again
            self.sessions.forget(use.session_id, owner)
        elif use.ends and status < 400:
            self.sessions.forget(use.session_id, replica)

    @staticmethod
    async def _cut_short(status: int, content_type: bytes, send: Send, err_status: int, message: str,
                         code: str) -> None:
        if not status:  # nothing sent yet: an error answer
            for part in _error_response(err_status, message, code):
                await send(part)
            return
        await send({"type": "http.response.body", "body": _stream_error(content_type, err_status, message, code),
                    "more_body": False})

    async def _metrics(self, request: ForwardedRequest, send: Send) -> None:
        """Each replica's /metrics, merged: ask one replica not yet asked until the router has none."""
        texts: dict[str, str] = {}
        asked: list[str] = []
        for _ in range(_MAX_FANOUT):
            replica, status, body = None, 0, b""
            try:
                async for message in self._engine.handle.remote(replace(request, exclude=tuple(asked))):
                    if message["type"] == REPLICA_MESSAGE:
                        replica = message["replica"]
                    elif message["type"] == "http.response.start":
                        status = message["status"]
                    elif message["type"] == "http.response.body":
                        body += message.get("body", b"")
            except RayActorError:
                continue  # gone: the router drops it and the next call goes elsewhere
            if replica is None or replica in asked:
                break
            asked.append(replica)
            if status != 200:  # e.g. 401, or 404 with --disable-metrics: answer as the replica did
                for part in json_messages(status, body):
                    await send(part)
                return
            texts[replica] = body.decode("utf-8")
        text = merge_metrics(texts) + (
            "# HELP lmdeploy_sdk_ray_routed_sessions Sessions the ingress routes to the replica that holds them.\n"
            "# TYPE lmdeploy_sdk_ray_routed_sessions gauge\n"
            f"lmdeploy_sdk_ray_routed_sessions {len(self.sessions)}\n")
        payload = text.encode("utf-8")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload, "more_body": False})


class Ingress:
    """The Ray Serve deployment class around IngressApp (built on the replica, after __init__)."""

    def __init__(self, engine: DeploymentHandle, session_capacity: int) -> None:
        self._asgi = IngressApp(engine, session_capacity)

    def __serve_build_asgi_app__(self) -> IngressApp:
        return self._asgi
