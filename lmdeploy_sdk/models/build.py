"""build_model: a model directory -> a ready CausalLM on the target device and dtype."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from lmdeploy_sdk.models.checkpoint import load_checkpoint
from lmdeploy_sdk.models.config import ModelConfig
from lmdeploy_sdk.models.decoder import CausalLM
from lmdeploy_sdk.models.registry import arch_spec, load_model_config
from lmdeploy_sdk.models.rope import rope_cos_sin

log = logging.getLogger(__name__)

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _warn_sliding_window(config: ModelConfig) -> None:
    if config.sliding_window is not None and config.sliding_window < config.max_position_embeddings:
        log.warning(
            "%s declares sliding_window=%d; attention here is full, so outputs match the reference "
            "model only while a context is at most %d tokens",
            config.architecture, config.sliding_window, config.sliding_window,
        )


def build_model(
    model_dir: str | Path,
    dtype: torch.dtype,
    device: torch.device | str,
    rope_scaling_factor: float = 0.0,
    *,
    random_weights: bool = False,
) -> CausalLM:
    """Build the model for `model_dir` on `device` in `dtype` and load its safetensors weights.

    Parameters are created on the meta device and materialised once on `device`,
    so no random initialisation is ever computed. `rope_scaling_factor` > 0 is
    LMDeploy's dynamic-NTK knob, applied as a static NTK-aware rope base (see
    rope.ntk_scaled_base); the rope table then covers that many times the trained
    context (`CausalLM.max_positions`). `random_weights` skips the checkpoint and
    fills N(0, 0.02) weights (norms 1) on the device: benchmarks of real shapes need
    no multi-GB files.
    """
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {_FLOAT_DTYPES}, got {dtype!r}")
    device = torch.device(device)
    model_dir = Path(model_dir)
    config = load_model_config(model_dir)
    spec = arch_spec(config.architecture)
    cos_sin = rope_cos_sin(config, rope_scaling_factor)  # [P, D] float32, validates the factor
    _warn_sliding_window(config)

    with torch.device("meta"):
        model = CausalLM(config, dtype, rope_scaling_factor)
    model.to_empty(device=device)
    model.requires_grad_(False)
    with torch.no_grad():
        model.model.rope_cos_sin.copy_(cos_sin)
    if random_weights:
        _fill_random(model)
    else:
        load_checkpoint(model, model_dir, spec.checkpoint_layout(config))
    log.info("loaded %s from %s (%s, %s)", config.architecture, model_dir, dtype, device)
    return model.eval()


@torch.no_grad()
def _fill_random(model: CausalLM) -> None:
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            param.normal_(0.0, 0.02)
