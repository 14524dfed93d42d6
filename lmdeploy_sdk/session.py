"""A stateful multi-turn conversation whose KV cache stays in the engine between turns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmdeploy_sdk.messages import Response

if TYPE_CHECKING:
    from lmdeploy_sdk.engine.engine import Engine


@dataclass(eq=False)
class Session:
    """Returned by `Pipeline.session()` / `Pipeline.chat()`; pass it back for the next turn.

    messages: the conversation so far (OpenAI format); history: (user, assistant) text pairs;
    response: the last turn's Response. `close()` frees the session's KV cache.
    """

    session_id: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)
    response: Response | None = None
    _engine: "Engine | None" = field(default=None, repr=False)

    @property
    def step(self) -> int:
        """Tokens of the conversation so far (LMDeploy's name)."""
        r = self.response
        return 0 if r is None else r.input_token_len + r.generate_token_len

    def close(self) -> None:
        if self._engine is not None:
            self._engine.end_session(self.session_id)
            self._engine = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
