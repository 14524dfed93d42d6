"""What the ingress hands a replica, and the session a request belongs to (read from its body).

The contract with the router: `owner` set means "only that replica may answer" (a replica
that is not the owner answers 410 session_lost); `exclude` lists replicas already asked
(the /metrics fan-out); a replica in it answers 204 at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

# Messages a replica sends besides ASGI's http.response.start / http.response.body.
REPLICA_MESSAGE = "lmdeploy.replica"  # first message: {"replica": id}
SESSION_MESSAGE = "lmdeploy.session"  # a session the request opened under an auto id: {"session_id": n}
# Every answer names the replica that gave it (for operators, and for tests that stop one).
REPLICA_HEADER = b"x-lmdeploy-replica"

# Routes whose JSON body may carry `session_id`.
_SESSION_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/chat/interactive", "/generate",
                             "/abort_request"})
INTERACTIVE_ROUTE = "/v1/chat/interactive"
_SESSIONS_PREFIX = "/v1/sessions/"
AUTO_SESSION_ID = -1


def json_messages(status: int, body: bytes, *headers: tuple[bytes, bytes]) -> tuple[dict, dict]:
    """A whole JSON answer as its two ASGI messages (the ingress's and a replica's own answers)."""
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         *headers]}
    return start, {"type": "http.response.body", "body": body, "more_body": False}


@dataclass(frozen=True)
class ForwardedRequest:
    """One HTTP request, whole (the body is read before forwarding)."""

    method: str
    path: str
    query_string: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    scheme: str = "http"
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    owner: str | None = None
    exclude: tuple[str, ...] = field(default=())

    def asgi_scope(self) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": self.scheme,
            "path": self.path,
            "raw_path": self.path.encode("utf-8"),
            "root_path": "",
            "query_string": self.query_string,
            "headers": [list(h) for h in self.headers],
            "client": list(self.client) if self.client else None,
            "server": list(self.server) if self.server else None,
        }


@dataclass(frozen=True)
class SessionUse:
    """session_id: the session the request continues or opens (AUTO_SESSION_ID: a new one the
    replica names); ends: the request ends it (once answered, no replica holds it)."""

    session_id: int
    ends: bool


class _SessionFields(msgspec.Struct):
    # Any: a wrong type is the replica's 400 to give, not the ingress's.
    session_id: Any = None
    end_session: Any = False
    interactive_mode: Any = False
    cancel: Any = False


def session_use(method: str, path: str, body: bytes) -> SessionUse | None:
    """The session a request uses, or None (a request any replica may answer)."""
    if method == "DELETE" and path.startswith(_SESSIONS_PREFIX):
        tail = path[len(_SESSIONS_PREFIX):]
        return SessionUse(int(tail), ends=True) if tail.lstrip("-").isdigit() else None
    if method != "POST" or path not in _SESSION_ROUTES:
        return None
    try:
        fields = msgspec.json.decode(body, type=_SessionFields)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    sid = fields.session_id
    if sid is None and path == INTERACTIVE_ROUTE:
        sid = AUTO_SESSION_ID  # the route's default
    if type(sid) is not int:
        return None
    if path == INTERACTIVE_ROUTE:
        ends = fields.interactive_mode is not True and fields.cancel is not True
    else:
        ends = fields.end_session is True
    if sid == AUTO_SESSION_ID and path != INTERACTIVE_ROUTE:
        return None  # chat completions name no session with -1
    return SessionUse(sid, ends)
