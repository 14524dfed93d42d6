"""build_model: a model directory -> a ready CausalLM on the target device and dtype."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from lmdeploy_sdk.models.checkpoint import load_checkpoint
from lmdeploy_sdk.models.config import ModelConfig, read_json
from lmdeploy_sdk.models.decoder import CausalLM
from lmdeploy_sdk.models.registry import arch_spec, load_model_config
from lmdeploy_sdk.models.rope import rope_cos_sin
from lmdeploy_sdk.quant import linear as int4_linear  # a module: quant.linear imports models too
from lmdeploy_sdk.quant.config import QuantConfig, quant_config

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
    model_format: str | None = None,
    random_weights: bool = False,
) -> CausalLM:
    """Build the model for `model_dir` on `device` in `dtype` and load its safetensors weights.

    Parameters are created on the meta device and materialised once on `device`,
    so no random initialisation is ever computed. `rope_scaling_factor` > 0 is
    LMDeploy's dynamic-NTK knob, applied as a static NTK-aware rope base (see
    rope.ntk_scaled_base); the rope table then covers that many times the trained
    context (`CausalLM.max_positions`). `random_weights` skips the checkpoint and
    fills N(0, 0.02) weights (norms 1) on the device: benchmarks of real shapes need
    no multi-GB files. A 4-bit checkpoint (config.json's quantization_config, checked
    against `model_format`: None detects) gets Int4Linear projections (quant.linear).
    """
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {_FLOAT_DTYPES}, got {dtype!r}")
    device = torch.device(device)
    model_dir = Path(model_dir)
    config = load_model_config(model_dir)
    spec = arch_spec(config.architecture)
    quant = load_quant_config(model_dir, model_format)
    layout = spec.checkpoint_layout(config)
    cos_sin = rope_cos_sin(config, rope_scaling_factor)  # [P, D] float32, validates the factor
    _warn_sliding_window(config)

    with torch.device("meta"):
        model = CausalLM(config, dtype, rope_scaling_factor)
        if quant is not None:
            swapped = int4_linear.swap_linears(model, quant, int4_linear.fused_sources(layout))
            layout = int4_linear.quantized_layout(layout, quant, swapped)
    model.to_empty(device=device)
    model.requires_grad_(False)
    with torch.no_grad():
        model.model.rope_cos_sin.copy_(cos_sin)
    if random_weights:
        _fill_random(model)
    else:
        load_checkpoint(model, model_dir, layout)
    for module in int4_linear.int4_modules(model):
        module.process_weights_after_loading()
    if quant is not None and device.type == "cuda":
        torch.cuda.empty_cache()  # the staging tensors' memory goes back to the KV cache's budget
    log.info("loaded %s from %s (%s, %s%s)", config.architecture, model_dir, dtype, device,
             f", {quant.method} int4 g{quant.group_size}" if quant else "")
    return model.eval()


def load_quant_config(model_dir: Path, model_format: str | None = None) -> QuantConfig | None:
    """The 4-bit format of the checkpoint in `model_dir` (None: float weights); ConfigError
    when it is one we cannot run or `model_format` names another."""
    path = Path(model_dir) / "config.json"
    return quant_config(read_json(path), model_format, str(path))


@torch.no_grad()
def _fill_random(model: CausalLM) -> None:
    int4 = int4_linear.int4_modules(model)
    for module in int4:
        module.fill_random()
    staged = {id(p) for m in int4 for p in m.parameters()}
    for name, param in model.named_parameters():
        if id(param) in staged:
            continue
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            param.normal_(0.0, 0.02)
