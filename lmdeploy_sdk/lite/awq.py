"""AWQ for one decoder layer: activation-aware scales, clipping, then int4 with zero points.

For each scaling group (model.SCALING_GROUPS) the per-input-channel scale is
s = x_mean^r / w_mean^(1-r), with x_mean the mean |input| of a channel over the calibration
tokens and w_mean the mean of the group-normalised |weight| of its column. Multiplying a
salient column by s > 1 before rounding shrinks its relative rounding error; dividing the
op before (a norm's weight, or the rows of v_proj/up_proj) by s keeps the float function
unchanged. r is 0.5 (LMDeploy's default smoothing), or, with search_scale, the best of a
grid over [0, 1) by the inspected block's output error on calibration tokens (AutoAWQ's
_search_best_scale). Then each linear but q/k gets a per-(row, group) clipping range
searched over shrink factors of its max |w| (AutoAWQ's _search_best_clip), and is rounded
to the nearest int4 value with integer zero points (quant.int4.quantize_rtn).

The clip search's error, mean over tokens of (x_g . (w_g - q_g))^2 per (row, group), is
d^T C_g d with C_g = mean x_g x_g^T, the [G, G] second moment of the group's inputs. Hooks
accumulate C over every calibration token, so the search weighs all of them (AutoAWQ
samples 512) at a cost that does not grow with the token count.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lmdeploy_sdk.lite.model import NOT_CLIPPED, PROJECTIONS, SCALING_GROUPS, LayerInputs, ScalingGroup, run_layer
from lmdeploy_sdk.quant.int4 import quantize_rtn


@dataclass(frozen=True)
class AwqSettings:
    group_size: int
    symmetric: bool = False
    search_scale: bool = False
    fixed_ratio: float = 0.5  # r without search_scale
    n_grid: int = 20  # ratios tried by the scale search; shrink steps are 1/n_grid each
    max_shrink: float = 0.5  # the clip search tries max|w| * (1 - i/n_grid) down to this fraction
    search_tokens: int = 4096  # calibration tokens the scale search runs the inspected block on


@dataclass
class _Inputs:
    """What hooks saw of one linear's input over a layer's forward."""

    abs_sum: torch.Tensor | None = None  # float32 [K]
    gram_sum: torch.Tensor | None = None  # float32 [K/G, G, G]: sum of x_g x_g^T per input group
    count: int = 0
    kept: list[torch.Tensor] = field(default_factory=list)  # first batches' inputs, [B, T, K] each

    @property
    def mean(self) -> torch.Tensor:
        return self.abs_sum / self.count

    @property
    def gram(self) -> torch.Tensor:
        return self.gram_sum / self.count

    def add(self, x: torch.Tensor, group_size: int, keep: bool) -> None:
        # x: [B, T, K]
        rows = x.detach().float().reshape(-1, x.shape[-1])  # [T', K]
        xg = rows.view(rows.shape[0], -1, group_size).transpose(0, 1)  # [K/G, T', G]
        abs_sum, gram = rows.abs().sum(0), torch.bmm(xg.transpose(1, 2), xg)  # [K], [K/G, G, G]
        self.abs_sum = abs_sum if self.abs_sum is None else self.abs_sum + abs_sum
        self.gram_sum = gram if self.gram_sum is None else self.gram_sum + gram
        self.count += rows.shape[0]
        if keep:
            self.kept.append(x.detach().clone())

    def divide(self, scales: torch.Tensor) -> None:
        """The inputs became x / s: rescale the statistics and the kept inputs."""
        s = scales.to(self.gram_sum.device)
        sg = s.view(self.gram_sum.shape[0], -1)  # [K/G, G]
        self.abs_sum = self.abs_sum / s
        self.gram_sum = self.gram_sum / (sg.unsqueeze(2) * sg.unsqueeze(1))
        for x in self.kept:
            x.div_(scales.to(x.device, x.dtype))


def dequantize(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """float32 [N, K] = (q - z) * s from quantize_rtn's (q [N, K], s [N, K/G], z [N, K/G])."""
    n, k = q.shape
    g = k // scales.shape[1]
    w = (q.float().view(n, -1, g) - zeros.float().unsqueeze(-1)) * scales.unsqueeze(-1)  # [N, K/G, G]
    return w.view(n, k)


def fake_quantize(w: torch.Tensor, settings: AwqSettings) -> torch.Tensor:
    """w [N, K] rounded to int4 and back, in w's dtype."""
    return dequantize(*quantize_rtn(w, settings.group_size, settings.symmetric)).to(w.dtype)


def weight_mean(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """float32 [K]: mean over rows of |w| / max|w| of its (row, group) (AutoAWQ's w_mean)."""
    n, k = weight.shape
    w = weight.float().abs().view(n, k // group_size, group_size)
    return (w / (w.amax(-1, keepdim=True) + 1e-6)).view(n, k).mean(0)


def awq_scales(x_mean: torch.Tensor, w_mean: torch.Tensor, ratio: float) -> torch.Tensor:
    """float32 [K]: x_mean^r / w_mean^(1-r), normalised to geometric mid-range 1."""
    s = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
    s = s / (s.max() * s.min()).sqrt()
    return torch.where(torch.isfinite(s), s, torch.ones_like(s))


def _forward(module: nn.Module, x: torch.Tensor, kwargs: dict[str, Any] | None) -> torch.Tensor:
    out = module(hidden_states=x, **kwargs) if kwargs is not None else module(x)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def search_scales(
    layer: nn.Module, group: ScalingGroup, seen: _Inputs, kwargs: list[dict[str, Any]], settings: AwqSettings
) -> torch.Tensor:
    """float32 [K]: the group's scales (fixed ratio, or the grid ratio with the least block output error)."""
    linears = [layer.get_submodule(name) for name in group.linears]
    w_mean = weight_mean(torch.cat([lin.weight for lin in linears]), settings.group_size)
    x_mean = seen.mean.to(w_mean.device)
    if not settings.search_scale:
        return awq_scales(x_mean, w_mean, settings.fixed_ratio)
    block = layer.get_submodule(group.inspect)
    block_kwargs = kwargs if group.inspect == "self_attn" else [None] * len(seen.kept)
    reference = [_forward(block, x, kw) for x, kw in zip(seen.kept, block_kwargs)]
    originals = [lin.weight.detach().clone() for lin in linears]
    best_err, best = float("inf"), None
    try:
        for i in range(settings.n_grid):
            s = awq_scales(x_mean, w_mean, i / settings.n_grid)
            sw = s.to(originals[0].dtype).view(1, -1)  # [1, K]
            for lin, w in zip(linears, originals):
                lin.weight.data = fake_quantize(w * sw, settings) / sw
            err = sum((_forward(block, x, kw).float() - ref.float()).pow(2).sum().item()
                      for x, kw, ref in zip(seen.kept, block_kwargs, reference))
            if err < best_err:
                best_err, best = err, s
    finally:
        for lin, w in zip(linears, originals):
            lin.weight.data = w
    assert best is not None, f"no finite error in the scale search of {group.linears}"
    return best


@torch.no_grad()
def apply_scales(layer: nn.Module, group: ScalingGroup, scales: torch.Tensor, seen: _Inputs) -> None:
    """Fold scales into the group: prev op's outputs / s, the linears' inputs columns * s, kept inputs / s."""
    prev = layer.get_submodule(group.prev_op)
    s = scales.to(prev.weight.device)
    if isinstance(prev, nn.Linear):  # its output rows are the group's input channels
        prev.weight.div_(s.to(prev.weight.dtype).view(-1, 1))
    else:  # RMSNorm
        prev.weight.div_(s.to(prev.weight.dtype))
    if getattr(prev, "bias", None) is not None:
        prev.bias.div_(s.to(prev.bias.dtype))
    for name in group.linears:
        lin = layer.get_submodule(name)
        lin.weight.mul_(s.to(lin.weight.dtype).view(1, -1))
    seen.divide(scales)


@torch.no_grad()
def search_clip(weight: torch.Tensor, gram: torch.Tensor, settings: AwqSettings) -> torch.Tensor:
    """float32 [N, K/G]: per (row, group) the clipping bound max|w| * (1 - i/n_grid) whose int4
    weights best reproduce the group's partial outputs, by the input second moments gram [K/G, G, G]."""
    n, k = weight.shape
    g = settings.group_size
    wg = weight.float().view(n, k // g, g)  # [N, K/G, G]
    max_abs = wg.abs().amax(-1)  # [N, K/G]
    best, best_err = max_abs.clone(), torch.full_like(max_abs, float("inf"))
    gram = gram.to(wg.device)
    for i in range(int(settings.max_shrink * settings.n_grid)):
        bound = (max_abs * (1 - i / settings.n_grid)).unsqueeze(-1)  # [N, K/G, 1]
        clipped = torch.maximum(torch.minimum(wg, bound), -bound)
        d = fake_quantize(clipped.view(n, k), settings).view(n, k // g, g) - wg  # [N, K/G, G]
        err = torch.einsum("ngh,nrh->nrg", gram, d.transpose(0, 1)).transpose(0, 1).mul(d).sum(-1)  # [N, K/G]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, bound.squeeze(-1), best)
    return best


@torch.no_grad()
def clip_weight(linear: nn.Linear, gram: torch.Tensor, settings: AwqSettings) -> None:
    bound = search_clip(linear.weight, gram, settings)  # [N, K/G]
    bound = bound.repeat_interleave(settings.group_size, dim=1).to(linear.weight.dtype)  # [N, K]
    linear.weight.copy_(torch.maximum(torch.minimum(linear.weight, bound), -bound))


def _watch(layer: nn.Module, settings: AwqSettings, keep_batches: int) -> tuple[dict[str, _Inputs], list[Any]]:
    """Forward pre-hooks on the first linear of each scaling group: input statistics, and the
    first keep_batches inputs for the scale search."""
    seen: dict[str, _Inputs] = {}
    handles = []
    for group in SCALING_GROUPS:
        name = group.linears[0]
        stats = seen[name] = _Inputs()

        def hook(_module, args, stats=stats):
            stats.add(args[0], settings.group_size, keep=len(stats.kept) < keep_batches)

        handles.append(layer.get_submodule(name).register_forward_pre_hook(hook))
    return seen, handles


def _keep_batches(inputs: LayerInputs, budget: int) -> int:
    """How many leading batches fit the search token budget (at least one)."""
    kept, tokens = 0, 0
    for h in inputs.hidden:
        if kept and tokens + h.shape[0] * h.shape[1] > budget:
            break
        kept, tokens = kept + 1, tokens + h.shape[0] * h.shape[1]
    return kept


def _scaled_groups(layer: nn.Module) -> list[ScalingGroup]:
    """The groups that apply here: v_proj -> o_proj only when v's outputs are o's inputs (no GQA)."""
    groups = []
    for group in SCALING_GROUPS:
        prev = layer.get_submodule(group.prev_op)
        first = layer.get_submodule(group.linears[0])
        if isinstance(prev, nn.Linear) and prev.out_features != first.in_features:
            continue
        groups.append(group)
    return groups


@torch.no_grad()
def quantize_layer(
    layer: nn.Module, inputs: LayerInputs, settings: AwqSettings
) -> tuple[list[torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """AWQ one decoder layer in place (scales folded, weights clipped). Returns the next
    layer's inputs, computed by this layer in full precision before any change (as AutoAWQ:
    every layer is calibrated on the float model's activations, so errors of earlier layers do
    not skew later layers' statistics), and quantize_rtn's (q, scales, zeros) per projection."""
    keep = _keep_batches(inputs, settings.search_tokens) if settings.search_scale else 0
    seen, handles = _watch(layer, settings, keep)
    try:
        outputs = run_layer(layer, inputs)
    finally:
        for h in handles:
            h.remove()
    input_of = {name: group.linears[0] for group in SCALING_GROUPS for name in group.linears}
    for group in _scaled_groups(layer):
        stats = seen[group.linears[0]]
        scales = search_scales(layer, group, stats, inputs.kwargs[:keep], settings)
        apply_scales(layer, group, scales, stats)
    quantized = {}
    for name in PROJECTIONS:
        linear = layer.get_submodule(name)
        if name not in NOT_CLIPPED:
            clip_weight(linear, seen[input_of[name]].gram, settings)
        quantized[name] = quantize_rtn(linear.weight, settings.group_size, settings.symmetric)
    return outputs, quantized
