"""The one exception request translation raises: OpenAI's error shape in waiting."""
from __future__ import annotations


class InvalidRequest(ValueError):
    """A request that cannot be served as asked; `param` names the offending field (OpenAI's error.param)."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
