"""The float model that `lite auto_awq` calibrates: which architectures, which projections
and scaling groups, loading it with transformers, and the decoder layers' inputs.

Llama, Mistral, Qwen2 and Qwen3 share one decoder layout in transformers (Qwen2 adds q/k/v
biases, Qwen3 q_norm/k_norm after the projections; neither changes a scaling group), so one
table serves them all. InternLM2 is remote code (no transformers class to run layer by
layer) and is refused before anything loads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmdeploy_sdk.errors import ModelLoadError
from lmdeploy_sdk.quant.int4 import check_group_size

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
# the decoder layer's projections that become int4 (HF names, relative to the layer)
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
DTYPES = ("auto", "float16", "bfloat16", "float32")


@dataclass(frozen=True)
class ScalingGroup:
    """Linears that read the same input, the op before them that the scales fold into, and
    the module whose output the scale search compares (AutoAWQ's prev_op / layers / module2inspect)."""

    prev_op: str
    linears: tuple[str, ...]
    inspect: str


SCALING_GROUPS = (
    ScalingGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn"),
    ScalingGroup("self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj"),  # only without GQA
    ScalingGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
    ScalingGroup("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"),
)
NOT_CLIPPED = ("self_attn.q_proj", "self_attn.k_proj")  # q k^T makes their error hard to measure per linear


def check_architecture(model_dir: Path) -> str:
    """The checkpoint's architecture; ValueError listing the supported ones otherwise."""
    try:
        raw = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {model_dir / 'config.json'}: {exc}") from exc
    archs = raw.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in SUPPORTED_ARCHITECTURES:
        why = " (remote code, not a transformers class)" if arch == "InternLM2ForCausalLM" else ""
        raise ValueError(f"lite auto_awq cannot quantize {arch}{why}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    if raw.get("quantization_config"):
        raise ValueError(f"{model_dir} already holds quantized weights "
                         f"({raw['quantization_config'].get('quant_method')}); quantize the float model")
    return arch


def check_model(model_dir: Path, group_size: int) -> None:
    """check_architecture, then ValueError naming the first projection whose inputs group_size
    does not divide. Reads only config.json (the layers are built on the meta device), so it
    fails before any weight loads."""
    from transformers import AutoConfig, AutoModelForCausalLM

    check_architecture(model_dir)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    for i, layer in enumerate(decoder_layers(skeleton)):
        for name in PROJECTIONS:
            linear = layer.get_submodule(name)
            check_group_size(group_size, linear.in_features,
                             f"model.layers.{i}.{name} ({linear.in_features} -> {linear.out_features})")


def torch_dtype(dtype: str, device: torch.device) -> torch.dtype | str:
    """'auto': float32 on CPU (fast and exact there), the checkpoint's own dtype elsewhere."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else "auto"
    return getattr(torch, dtype)


def load_float_model(model_dir: Path, dtype: str, device: torch.device) -> tuple[nn.Module, Any]:
    """(transformers causal LM on the CPU in eval mode, tokenizer); check_model it first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(dtype, device))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, KeyError) as exc:
        raise ModelLoadError(f"cannot read model {model_dir}: {exc}") from exc
    return model.eval(), tokenizer


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return model.model.layers


@dataclass
class LayerInputs:
    """What a decoder layer is called with, for each calibration batch."""

    hidden: list[torch.Tensor]  # per batch: [B, T, H]
    kwargs: list[dict[str, Any]]  # per batch: attention_mask, position_ids, position_embeddings, ...

    @property
    def num_tokens(self) -> int:
        return sum(h.shape[0] * h.shape[1] for h in self.hidden)


class _Caught(Exception):
    """Stops the forward once layer 0's inputs are caught."""


@torch.no_grad()
def first_layer_inputs(model: nn.Module, tokens: torch.Tensor, batch_size: int, device: torch.device) -> LayerInputs:
    """Layer 0's inputs for each batch of `tokens` (int64 [n, T]), on `device`: the embeddings
    and rotary tables run there, the decoder layers not at all."""
    assert batch_size >= 1, batch_size  # checked by calibration.check_calibration
    body = model.model
    outer = [m for name, m in body.named_children() if name != "layers"]  # embed_tokens, rotary_emb, norm
    for m in outer:
        m.to(device)
    caught = LayerInputs([], [])
    shared: dict[tuple[int, ...], dict[str, Any]] = {}  # batch shape -> kwargs (one copy each)

    def catch(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values", "use_cache")}
        caught.hidden.append(hidden)
        caught.kwargs.append(shared.setdefault(tuple(hidden.shape), kwargs))
        raise _Caught

    handle = body.layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for batch in tokens.split(batch_size):
            try:
                body(input_ids=batch.to(device), use_cache=False)
            except _Caught:
                pass
    finally:
        handle.remove()
        for m in outer:
            m.to("cpu")
    return caught


@torch.no_grad()
def run_layer(layer: nn.Module, inputs: LayerInputs) -> list[torch.Tensor]:
    """The layer's outputs ([B, T, H] per batch)."""
    outputs = []
    for hidden, kwargs in zip(inputs.hidden, inputs.kwargs):
        out = layer(hidden, **kwargs)
        outputs.append(out[0] if isinstance(out, tuple) else out)
    return outputs
