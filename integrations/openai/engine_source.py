"""The engine a client runs on: a Pipeline it loads (and closes) or one it is lent (and leaves open)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lmdeploy_sdk.async_engine import AsyncEngine
from lmdeploy_sdk.messages import ChatTemplateConfig, TurbomindEngineConfig
from lmdeploy_sdk.sync_pipeline import Pipeline
from lmdeploy_sdk.sync_pipeline import pipeline as load_pipeline

log = logging.getLogger("lmdeploy_sdk.integrations")

class EngineSource:
    def __init__(
        self,
        model: str | Path | None,
        backend_config: TurbomindEngineConfig | None,
        chat_template_config: ChatTemplateConfig | None,
        model_name: str | None,
        pipeline: Pipeline | None,
        http_args: dict[str, Any],
    ) -> None:
        if pipeline is not None:
            given = {"model": model, "backend_config": backend_config,
                     "chat_template_config": chat_template_config, "model_name": model_name}
            clash = sorted(k for k, v in given.items() if v is not None)
            if clash:
                raise ValueError(f"pass either pipeline= or the arguments that load one, not both; got {clash}")
            if not isinstance(pipeline, Pipeline):
                raise TypeError(f"pipeline must be an lmdeploy_sdk Pipeline, got {type(pipeline).__name__}")
        if http_args.get("base_url") is not None:
            log.info("base_url=%r is not used: this client runs the model in this process", http_args["base_url"])
        self.owned = pipeline is None
        self.pipeline = pipeline if pipeline is not None else load_pipeline(
            None if model is None else str(model), backend_config, chat_template_config, model_name=model_name
        )

    @property
    def engine(self) -> AsyncEngine:
        return self.pipeline.async_engine

    def close(self) -> None:
        """Close the engine if this client loaded it."""
        if self.owned:
            self.pipeline.close()
