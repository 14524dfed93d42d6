"""4-bit linear layers: the module, the swap that puts it into a model, and the checkpoint
layout that fills it.

The model files build plain `Linear` layers and pass `proj.weight` to the ops; they never
learn a weight is int4. For a 4-bit checkpoint the builder swaps the decoder layers'
projections for `Int4Linear` (same name, same bias), whose `weight` is an `Int4Weight`
that every linear op accepts. Loading is three steps, as vLLM's LinearMethod has them:
the module registers staging tensors in the rows layout (output rows first, so fused
[q | k | v] and [gate | up] fill by row ranges as float weights do), the loader writes the
checkpoint's tensors into them (converted by quant.formats), and
`process_weights_after_loading` repacks them into the kernel layout and frees them.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lmdeploy_sdk.models.checkpoint import CheckpointLayout, WeightTarget
from lmdeploy_sdk.models.errors import ConfigError
from lmdeploy_sdk.quant import formats
from lmdeploy_sdk.quant.config import QuantConfig
from lmdeploy_sdk.quant.int4 import Int4Weight, RowsInt4, check_group_size

Transform = Callable[[torch.Tensor], torch.Tensor]
# Projections of a decoder layer that 4-bit checkpoints quantize (our fused names).
QUANTIZED_PROJECTIONS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


class Int4Linear(nn.Module):
    """y = x W^T + b with W in the int4 form of quant.int4 (see the module docstring)."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool, group_size: int, dtype: torch.dtype,
        zero_points: bool,
    ) -> None:
        super().__init__()
        check_group_size(group_size, in_features, f"a {in_features} -> {out_features} projection")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.dtype = dtype
        self.zero_points = zero_points
        n, groups = out_features, in_features // group_size
        # staging, rows layout (filled by the loader, freed by process_weights_after_loading)
        self.staged_qweight = _staging(n, in_features // 8, torch.int32)
        self.staged_scales = _staging(n, groups, torch.float32)
        if zero_points:
            self.staged_zeros = _staging(n, groups, torch.float32)  # m = -z s
        else:
            self.staged_mins = _staging(n, groups, torch.float32)
        self.bias = nn.Parameter(torch.empty(n, dtype=dtype), requires_grad=False) if bias else None
        # the kernel layout (see Int4Weight), set by process_weights_after_loading
        self.register_buffer("qweight", None)
        self.register_buffer("scale_min", None)

    @property
    def weight(self) -> Int4Weight:
        if self.qweight is None:
            raise RuntimeError("Int4Linear used before process_weights_after_loading()")
        return Int4Weight(self.qweight, self.scale_min, self.out_features, self.in_features, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from lmdeploy_sdk import ops

        return ops.linear(x, self.weight, self.bias)

    @torch.no_grad()
    def process_weights_after_loading(self) -> None:
        """Repack the staged rows into the kernel layout and free the staging tensors."""
        scales = self.staged_scales
        mins = -self.staged_zeros * scales if self.zero_points else self.staged_mins
        rows = RowsInt4(self.staged_qweight, scales, mins)
        packed = Int4Weight.from_rows(rows, self.dtype)
        for name in ("staged_qweight", "staged_scales", "staged_zeros", "staged_mins"):
            if hasattr(self, name):
                delattr(self, name)
        self.register_buffer("qweight", packed.qweight)
        self.register_buffer("scale_min", packed.scale_min)

    @torch.no_grad()
    def fill_random(self, generator: torch.Generator | None = None) -> None:
        """Random weights of about N(0, 0.02) (benchmarks of real shapes need no checkpoint)."""
        self.staged_qweight.random_(-(2**31), 2**31 - 1, generator=generator)
        self.staged_scales.fill_(0.02 / 4.6)  # uniform q in 0..15 has std 4.6
        if self.zero_points:
            self.staged_zeros.fill_(7.5)
        else:
            self.staged_mins.fill_(-7.5 * 0.02 / 4.6)
        if self.bias is not None:
            self.bias.normal_(0.0, 0.02)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int4, "
                f"group_size={self.group_size}, bias={self.bias is not None}")


def _staging(rows: int, cols: int, dtype: torch.dtype) -> nn.Parameter:
    # A Parameter so the checkpoint loader fills it like any weight (never trained).
    return nn.Parameter(torch.empty(rows, cols, dtype=dtype), requires_grad=False)


def swap_linears(model: nn.Module, quant: QuantConfig, sources: dict[str, list[str]]) -> list[str]:
    """Replace the decoder layers' projections that `quant` converts by Int4Linear modules;
    returns their names. sources: our module name -> the checkpoint module names fused into it
    (a fused projection must be all 4-bit or all float)."""
    swapped = []
    for name, module in list(model.named_modules()):
        if not (isinstance(module, nn.Linear) and name.endswith(QUANTIZED_PROJECTIONS)):
            continue
        parts = sources.get(name, [name])
        converted = [quant.converts(p) for p in parts]
        if not any(converted):
            continue
        if not all(converted):
            raise ConfigError(
                f"modules_to_not_convert leaves part of {name} ({', '.join(parts)}) in float; "
                "a fused projection must be all 4-bit or all float"
            )
        new = Int4Linear(module.in_features, module.out_features, module.bias is not None, quant.group_size,
                         module.weight.dtype, quant.has_zero_points)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)
        swapped.append(name)
    return swapped


def _then(first: Transform, second: Transform | None) -> Transform:
    return first if second is None else (lambda t: second(first(t)))


def _tensor_transforms(quant: QuantConfig) -> dict[str, tuple[str, Transform]]:
    """checkpoint suffix -> (staging parameter, conversion to the rows layout)."""
    if quant.method == "awq":
        return {"qweight": ("staged_qweight", formats.awq_qweight), "qzeros": ("staged_zeros", formats.awq_qzeros),
                "scales": ("staged_scales", formats.group_scales)}
    if quant.method == "gptq":
        offset = quant.zero_offset
        return {"qweight": ("staged_qweight", formats.gptq_qweight),
                "qzeros": ("staged_zeros", lambda t: formats.gptq_qzeros(t, offset)),
                "scales": ("staged_scales", formats.group_scales)}
    # lmdeploy_int4: already the rows layout
    same = lambda t: t  # noqa: E731
    return {"qweight": ("staged_qweight", same), "scales": ("staged_scales", lambda t: t.float()),
            "mins": ("staged_mins", lambda t: t.float())}


def quantized_layout(layout: CheckpointLayout, quant: QuantConfig, swapped: list[str]) -> CheckpointLayout:
    """The float layout with every swapped projection's `.weight` replaced by the format's
    int4 tensors (same row ranges, the float layout's own transform applied after the
    format's), and GPTQ's g_idx accepted and ignored (act-order is refused earlier)."""
    swapped_params = {f"{name}.weight" for name in swapped}
    targets: dict[str, WeightTarget] = {}
    ignored = set(layout.ignored)
    per_tensor = _tensor_transforms(quant)
    for ckpt_name, target in layout.targets.items():
        if target.param not in swapped_params:
            targets[ckpt_name] = target
            continue
        module = target.param.removesuffix(".weight")
        prefix = ckpt_name.removesuffix(".weight")
        for suffix, (staged, convert) in per_tensor.items():
            targets[f"{prefix}.{suffix}"] = WeightTarget(f"{module}.{staged}", target.rows,
                                                          _then(convert, target.transform))
        if quant.method == "gptq":
            ignored.add(f"{prefix}.g_idx")
    return CheckpointLayout(targets, frozenset(ignored))


def fused_sources(layout: CheckpointLayout) -> dict[str, list[str]]:
    """our module name -> the checkpoint module names whose weights fill it."""
    sources: dict[str, list[str]] = {}
    for ckpt_name, target in layout.targets.items():
        if ckpt_name.endswith(".weight") and target.param.endswith(".weight"):
            sources.setdefault(target.param.removesuffix(".weight"), []).append(ckpt_name.removesuffix(".weight"))
    return sources


def int4_modules(model: nn.Module) -> list[Int4Linear]:
    return [m for m in model.modules() if isinstance(m, Int4Linear)]
