"""What an operator can set on the API server (the `serve api_server` flags that are not engine flags)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSettings:
    """api_keys: when given, every non-public route needs one as a Bearer token.
    max_concurrent_requests: sequences in flight (running + queued) before new
    requests get 429. shutdown_grace_s: after SIGTERM, how long running requests
    may take before they end with an error. chat_page_at_root: serve the chat page
    at `/` instead of redirecting to the API docs (what `serve gradio` does).
    max_sessions / session_ttl_s: sessions kept between requests, and how long an idle one
    lives (the least recently used idle one is ended first when there are too many).
    allowed_hosts: Host header values accepted (`*` any, `*.example.com` a domain's hosts);
    empty accepts any host."""

    api_keys: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    allow_credentials: bool = False
    allow_methods: tuple[str, ...] = ("*",)
    allow_headers: tuple[str, ...] = ("*",)
    max_concurrent_requests: int = 256
    retry_after_s: int = 1
    shutdown_grace_s: float = 30.0
    disable_metrics: bool = False
    chat_page_at_root: bool = False
    max_sessions: int = 10_000
    session_ttl_s: float = 3600.0
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_concurrent_requests < 1:
            raise ValueError(f"max_concurrent_requests={self.max_concurrent_requests} must be >= 1")
        if self.retry_after_s < 0:
            raise ValueError(f"retry_after_s={self.retry_after_s} must be >= 0")
        if self.shutdown_grace_s < 0:
            raise ValueError(f"shutdown_grace_s={self.shutdown_grace_s} must be >= 0")
        if any(not k for k in self.api_keys):
            raise ValueError("api_keys must not contain an empty key")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions={self.max_sessions} must be >= 1")
        if not self.session_ttl_s > 0:
            raise ValueError(f"session_ttl_s={self.session_ttl_s} must be > 0")
        if any(not h or h != h.strip() for h in self.allowed_hosts):
            raise ValueError(f"allowed_hosts={list(self.allowed_hosts)} must not contain empty or padded names")
