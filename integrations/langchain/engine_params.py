"""Fields and plumbing shared by `LMDeploy` and `LMDeployChat`: where the model runs and how
requests are sampled. The connection opens on first use, so building a model is cheap."""
from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from lmdeploy_sdk.integrations.langchain.connection import Connection, in_process, remote
from lmdeploy_sdk.messages import ChatTemplateConfig, TurbomindEngineConfig
from lmdeploy_sdk.model_source import DEFAULT_MODEL
from lmdeploy_sdk.sync_pipeline import Pipeline

# kwargs LangChain itself may hand to _generate/_stream that are not request fields
_LANGCHAIN_ONLY = ("stream",)
# LMDeploy's docs' spellings of our fields
_LMDEPLOY_SPELLINGS = {"model_name": "model", "endpoint": "base_url", "api_url": "base_url"}


class EngineParams(BaseModel):
    # extra="forbid": a misspelt field (`tempreature=`) is an error, not silently ignored
    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True, protected_namespaces=(),
                              extra="forbid")

    model: str | None = None
    """In-process: a local HF directory or an embedded model name (None: the default one).
    Remote: the served model's name (None: the one the server serves)."""
    base_url: str | None = None
    """URL of a running `lmdeploy-sdk serve api_server` (with or without /v1); None runs in-process."""
    api_key: SecretStr | None = None
    """The server's API key (remote only)."""
    pipeline: Pipeline | None = Field(default=None, exclude=True)
    """An already loaded Pipeline to share (in-process); it is left open by close()."""
    backend_config: TurbomindEngineConfig | None = None
    """Engine settings when this model loads the engine itself (a TurbomindEngineConfig or its fields as a dict)."""
    chat_template_config: ChatTemplateConfig | None = None
    temperature: float | None = None
    """None: the server's default (0.7); 0 is greedy."""
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    timeout: float | None = None
    """Seconds per request to a remote server."""
    max_retries: int = 2
    """Retries of a failed request to a remote server."""
    streaming: bool = False
    """Generate by streaming even on invoke (callbacks see each token)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Other request fields, e.g. top_k, repetition_penalty, session_id (the server's extras)."""

    _connection: Connection | None = PrivateAttr(default=None)
    _connect_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="before")
    @classmethod
    def _lmdeploy_spellings(cls, data: Any) -> Any:
        """LMDeploy's `model_name`, `endpoint` and `api_url` mean our `model` and `base_url`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for spelling, field in _LMDEPLOY_SPELLINGS.items():
            if spelling in data:
                value = data.pop(spelling)
                if data.get(field) is not None and data[field] != value:
                    raise ValueError(f"{spelling}={value!r} and {field}={data[field]!r} disagree "
                                     f"({spelling} is another name for {field})")
                data[field] = value
        return data

    @field_validator("backend_config", mode="before")
    @classmethod
    def _engine_config_from_dict(cls, value: Any) -> Any:
        return TurbomindEngineConfig(**value) if isinstance(value, dict) else value

    @field_validator("chat_template_config", mode="before")
    @classmethod
    def _template_config_from_dict(cls, value: Any) -> Any:
        return ChatTemplateConfig(**value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _one_place_to_run(self) -> EngineParams:
        if self.base_url is not None:
            local = [k for k in ("pipeline", "backend_config", "chat_template_config") if getattr(self, k) is not None]
            if local:
                raise ValueError(f"base_url runs the model on a server; {local} only apply in-process")
        elif self.pipeline is not None and (self.backend_config is not None or self.chat_template_config is not None):
            raise ValueError("pipeline= shares a loaded engine; backend_config/chat_template_config cannot change it")
        return self

    def connection(self) -> Connection:
        """The clients requests go through (loads the model, or reaches the server, on first use)."""
        with self._connect_lock:
            if self._connection is None:
                if self.base_url is not None:
                    key = self.api_key.get_secret_value() if self.api_key is not None else None
                    self._connection = remote(self.base_url, key, self.model, self.timeout, self.max_retries)
                else:
                    model = None if self.pipeline is not None else self.model
                    self._connection = in_process(model, self.pipeline, self.backend_config,
                                                  self.chat_template_config)
            return self._connection

    @property
    def served_model_name(self) -> str:
        """The name requests give as `model` (connects on first use)."""
        return self.connection().model_name

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "top_p": self.top_p, "seed": self.seed, **self.model_kwargs}

    def display_model_name(self) -> str:
        """A name for traces that never loads or connects: what was asked for, else the default model."""
        if self.model is not None:
            return self.model
        if self.pipeline is not None:
            return self.pipeline.model_name
        if self._connection is not None:
            return self._connection.model_name
        return DEFAULT_MODEL if self.base_url is None else "default"

    def request_params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Request fields from the model's settings, then this call's stop and kwargs (which win)."""
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens,
                                  "top_p": self.top_p, "seed": self.seed, **self.model_kwargs}
        stop = stop if stop is not None else self.stop
        if stop:
            params["stop"] = list(stop)
        params.update({k: v for k, v in kwargs.items() if k not in _LANGCHAIN_ONLY})
        return {k: v for k, v in params.items() if v is not None}

    def get_token_ids(self, text: str) -> list[int]:
        """The model's own token ids of `text` (in-process: its tokenizer; remote: the server's
        /v1/encode), so get_num_tokens counts what the model sees, offline too."""
        return self.connection().encode(text)

    def end_session(self, session_id: int) -> None:
        """Free the KV cache the engine keeps for requests sent with `session_id`."""
        self.connection().end_session(session_id)

    def close(self) -> None:
        """Close the clients, and the engine if this model loaded it (idempotent)."""
        with self._connect_lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
