"""Build a ready engine from a model path and the user's configs."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdeploy_sdk.engine.block_manager import BlockManager
from lmdeploy_sdk.engine.engine import Engine
from lmdeploy_sdk.engine.memory import (
    block_bytes,
    describe_cache,
    default_max_batch_size,
    num_cache_blocks,
    resolve_device,
    resolve_dtype,
)
from lmdeploy_sdk.engine.runner import ModelRunner
from lmdeploy_sdk.messages import ChatTemplateConfig, TurbomindEngineConfig
from lmdeploy_sdk.model_source import resolve_model_path
from lmdeploy_sdk.models import build_model, load_model_config
from lmdeploy_sdk.models.config import ModelConfig
from lmdeploy_sdk.quant.kv_cache import packed_dim
from lmdeploy_sdk.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """Everything a front end (Pipeline, AsyncEngine, server, shims) shares for one model."""

    model_dir: Path
    model_name: str
    tokenizer: Tokenizer
    engine: Engine
    session_len: int
    backend_config: TurbomindEngineConfig
    # A vision-language model's processor and vision encoder (lmdeploy_sdk.vl.model.VisionModel)
    vision: Any = None

    def close(self) -> None:
        self.engine.close()


def _check_supported(cfg: TurbomindEngineConfig) -> None:
    if cfg.tp != 1:
        raise NotImplementedError(f"tp={cfg.tp}: tensor parallelism is not supported yet; use tp=1")


def preflight(model_path: str | Path | None, cfg: TurbomindEngineConfig) -> tuple[Path, ModelConfig]:
    """(model directory, its config), or what load() refuses before it reads weights (an
    unsupported option, a model that is not there or not a model); launchers that build the
    engine in other processes call it to fail early."""
    _check_supported(cfg)
    model_dir = resolve_model_path(model_path, cfg.model_format)
    model_cfg = load_model_config(model_dir)
    if cfg.quant_policy:
        packed_dim(model_cfg.head_dim, cfg.quant_policy)  # ValueError for an odd head dim with int4
    return model_dir, model_cfg


def load(
    model_path: str | Path | None,
    backend_config: TurbomindEngineConfig | None = None,
    chat_template_config: ChatTemplateConfig | None = None,
    model_name: str | None = None,
    *,
    random_weights: bool = False,
    vision_config: Any = None,
) -> LoadedModel:
    """random_weights: build the model from config.json with random weights (benchmarks only).
    vision_config: a VisionConfig for a vision-language model's image encoder."""
    cfg = backend_config or TurbomindEngineConfig()
    if not isinstance(cfg, TurbomindEngineConfig):
        raise TypeError(f"backend_config must be a TurbomindEngineConfig, got {type(cfg).__name__}")
    model_dir, model_cfg = preflight(model_path, cfg)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, model_cfg.torch_dtype, device)
    tokenizer = Tokenizer(model_dir, chat_template_config)
    model = build_model(model_dir, dtype, device, cfg.rope_scaling_factor, model_format=cfg.model_format,
                        random_weights=random_weights)

    bs = cfg.cache_block_seq_len
    session_len = cfg.session_len or model_cfg.max_position_embeddings
    if session_len > model.max_positions:
        raise ValueError(
            f"session_len={session_len} exceeds the {model.max_positions} positions the model supports "
            "(raise rope_scaling_factor to extend it)"
        )
    max_batch = cfg.max_batch_size or default_max_batch_size(device)
    per_block = block_bytes(model_cfg.num_layers, model_cfg.num_kv_heads, model_cfg.head_dim, bs, dtype,
                            cfg.quant_policy)
    useful = max_batch * -(-session_len // bs)
    num_blocks = num_cache_blocks(cfg.cache_max_entry_count, per_block, device, useful)
    log.info("%s", describe_cache(num_blocks, bs, per_block, cfg.quant_policy, dtype))
    if num_blocks * bs < session_len:
        log.warning(
            "session_len %d exceeds the KV cache (%d blocks x %d tokens); capping session_len to %d",
            session_len, num_blocks, bs, num_blocks * bs,
        )
        session_len = num_blocks * bs
    runner = ModelRunner(model, num_blocks, bs, dtype, device, max_batch, session_len, cfg.quant_policy)
    engine = Engine(
        runner=runner,
        tokenizer=tokenizer,
        block_manager=BlockManager(num_blocks, bs, cfg.enable_prefix_caching),
        max_batch_size=max_batch,
        max_prefill_tokens=cfg.max_prefill_token_num,
        session_len=session_len,
        vocab_size=model_cfg.vocab_size,
    )
    # served as typed (API.md); the server also accepts its short name (server/routes/openai_api.py)
    name = model_name or (str(model_path) if model_path is not None else model_dir.name)
    vision = None
    if model_cfg.has_vision:
        from lmdeploy_sdk.vl.model import VisionModel

        vision = VisionModel(model_dir, dtype, device, vision_config, random_weights)
    return LoadedModel(model_dir, name, tokenizer, engine, session_len, cfg, vision)
