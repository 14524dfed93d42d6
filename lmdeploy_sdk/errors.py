"""Error codes carried by `Response.error_code` and the exceptions the public API raises."""
from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Why a request ended with finish_reason='error' (stable numbers, shown to users)."""

    INPUT_TOO_LONG = 1  # prompt (plus session history) does not fit session_len
    INVALID_REQUEST = 2  # bad parameters or an empty prompt
    SESSION_BUSY = 3  # another request is running on the same session_id
    ENGINE_ERROR = 4  # the engine failed while running the request
    ENGINE_CLOSED = 5  # the engine was shut down


class ModelLoadError(RuntimeError):
    """The model could not be found, read or built."""


class ConfigError(ModelLoadError, ValueError):
    """config.json is missing, unreadable, or describes a model we cannot run."""
