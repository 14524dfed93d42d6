"""The per-layer AWQ pieces on small random layers: scales, folding, the clip search, one layer end to end."""
from __future__ import annotations

import copy

import pytest
import torch
import transformers

from lmdeploy_sdk.lite import awq
from lmdeploy_sdk.lite.model import PROJECTIONS, SCALING_GROUPS, first_layer_inputs, run_layer
from lmdeploy_sdk.quant.int4 import quantize_rtn

G = 32


def _model(kv_heads: int = 2, arch=transformers.LlamaConfig, seed: int = 0):
    torch.manual_seed(seed)
    cfg = arch(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=kv_heads, max_position_embeddings=256, initializer_range=0.2)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():  # norms that are not all ones, so folding into them is visible
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def _inputs(model, batches: int = 2, seqlen: int = 24):
    tokens = torch.randint(0, 97, (batches, seqlen), generator=torch.Generator().manual_seed(1))
    return first_layer_inputs(model, tokens, 1, torch.device("cpu"))


def test_scales_are_normalised_and_follow_the_ratio():
    x_mean, w_mean = torch.rand(64) * 4 + 0.01, torch.rand(64) + 0.01
    for ratio in (0.0, 0.5, 0.95):
        s = awq.awq_scales(x_mean, w_mean, ratio)
        assert torch.allclose(s.max() * s.min(), torch.tensor(1.0), rtol=1e-5)
    s0, s5 = awq.awq_scales(x_mean, w_mean, 0.0), awq.awq_scales(x_mean, w_mean, 0.5)
    assert torch.corrcoef(torch.stack([s0, 1 / (w_mean + 1e-4)]))[0, 1] > 0.99  # r=0: weights only
    assert torch.corrcoef(torch.stack([s5.log(), (x_mean / w_mean).log()]))[0, 1] > 0.99


def test_fake_quantize_is_within_half_a_step():
    w = torch.randn(16, 128)
    q, s, z = quantize_rtn(w, G)
    err = (awq.fake_quantize(w, awq.AwqSettings(group_size=G)) - w).abs().view(16, -1, G)
    assert (err <= s.unsqueeze(-1) / 2 + 1e-6).all()
    assert torch.equal(awq.dequantize(q, s, z), awq.fake_quantize(w, awq.AwqSettings(group_size=G)))


def test_clip_search_by_second_moments_equals_the_search_on_tokens():
    torch.manual_seed(0)
    n, k, t = 16, 128, 300
    w, x = torch.randn(n, k), torch.randn(t, k) * torch.rand(k) * 3
    seen = awq._Inputs()
    seen.add(x[None], G, keep=False)
    settings = awq.AwqSettings(group_size=G)
    got = awq.search_clip(w, seen.gram, settings)
    # AutoAWQ's way: partial outputs per (row, group) on the tokens themselves
    wg, xg = w.view(n, -1, G), x.view(t, -1, G)
    max_abs = wg.abs().amax(-1)
    reference = torch.einsum("tng,rng->rtn", xg, wg)
    best, best_err = max_abs.clone(), torch.full_like(max_abs, float("inf"))
    for i in range(10):
        bound = (max_abs * (1 - i / 20)).unsqueeze(-1)
        qw = awq.fake_quantize(torch.maximum(torch.minimum(wg, bound), -bound).view(n, k), settings).view(n, -1, G)
        err = (torch.einsum("tng,rng->rtn", xg, qw) - reference).pow(2).mean(1)
        better = err < best_err
        best_err, best = torch.where(better, err, best_err), torch.where(better, bound.squeeze(-1), best)
    assert torch.allclose(got, best)
    assert (got < max_abs).any()  # some groups do clip


@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa", "mha"])
def test_folding_scales_keeps_the_float_layer(kv_heads):
    model = _model(kv_heads)
    inputs = _inputs(model)
    layer = model.model.layers[0]
    before = run_layer(layer, inputs)
    seen = {group.linears[0]: awq._Inputs() for group in SCALING_GROUPS}
    for stats in seen.values():
        stats.add(torch.randn(1, 4, 128), G, keep=False)  # any statistics: only the folding is checked
    groups = awq._scaled_groups(layer)
    assert ("self_attn.v_proj" in [g.prev_op for g in groups]) == (kv_heads == 4)  # v -> o only without GQA
    for group in groups:
        k = layer.get_submodule(group.linears[0]).in_features
        stats = seen[group.linears[0]]
        stats.abs_sum, stats.gram_sum = torch.ones(k), torch.ones(k // G, G, G)
        awq.apply_scales(layer, group, torch.rand(k) + 0.5, stats)
    after = run_layer(layer, inputs)
    for b, a in zip(before, after):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("search", [False, True], ids=["fixed-ratio", "search-scale"])
def test_one_layer_quantizes_close_to_float_and_beats_plain_rounding(search):
    model = _model(kv_heads=4, seed=3)
    inputs = _inputs(model, batches=4)
    layer = model.model.layers[0]
    reference = run_layer(copy.deepcopy(layer), inputs)
    rtn = copy.deepcopy(layer)
    with torch.no_grad():
        for name in PROJECTIONS:
            lin = rtn.get_submodule(name)
            lin.weight.copy_(awq.dequantize(*quantize_rtn(lin.weight, G)))
    settings = awq.AwqSettings(group_size=G, search_scale=search, search_tokens=48)
    outputs, quantized = awq.quantize_layer(layer, inputs, settings)
    assert all(torch.equal(o, r) for o, r in zip(outputs, reference))  # next inputs: the float layer's
    assert set(quantized) == set(PROJECTIONS)
    with torch.no_grad():
        for name, (q, s, z) in quantized.items():
            assert q.dtype == torch.uint8 and z.dtype == torch.uint8 and int(q.max()) <= 15
            layer.get_submodule(name).weight.copy_(awq.dequantize(q, s, z))

    def error(module) -> float:
        out = run_layer(module, inputs)
        return sum((o - r).pow(2).sum().item() for o, r in zip(out, reference))

    total = sum(r.pow(2).sum().item() for r in reference)
    assert error(layer) < 0.1 * total  # 4-bit g32 on random weights: a few % of the output energy
    assert error(layer) < error(rtn)


def test_symmetric_quantization_uses_zero_point_8():
    model = _model()
    _, quantized = awq.quantize_layer(model.model.layers[0], _inputs(model), awq.AwqSettings(group_size=G,
                                                                                           symmetric=True))
    assert all(bool((z == 8).all()) for _, _, z in quantized.values())
