"""Acceptance (W4A16, interoperability): 4-bit checkpoints written by an independent writer
(tests/quant_checkpoints.py, AutoAWQ's and AutoGPTQ's documented layouts) load, detected
and named, and their greedy tokens on CPU equal transformers' on the dequantized weights."""
from __future__ import annotations

import json

import pytest
from quant_checkpoints import write_quantized
from reference import TEXTS as ALL_TEXTS, hf_greedy
from tiny_models import reference_model
from transformers import AutoTokenizer

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline
from lmdeploy_sdk.models import ConfigError
from lmdeploy_sdk.quant.linear import Int4Linear

TEXTS = ALL_TEXTS[:5]
NEW = 12
GREEDY = GenerationConfig(max_new_tokens=NEW, ignore_eos=True)


@pytest.fixture(scope="module")
def quantized(tiny_model_factory, tmp_path_factory):
    """make(arch, method, group) -> the 4-bit directory (its float twin in ./dequantized)."""
    cache = {}

    def make(arch: str, method: str, group: int = 32):
        key = (arch, method, group)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"{method}-{arch}")
            cache[key] = write_quantized(tiny_model_factory(arch), out / "model", method, group)
        return cache[key]

    return make


def _hf_tokens(path):
    tok = AutoTokenizer.from_pretrained(path)
    model = reference_model(path / "dequantized")
    return [hf_greedy(model, tok.encode(t), NEW) for t in TEXTS]


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"])
@pytest.mark.parametrize("method", ["awq", "gptq"])
def test_greedy_tokens_equal_transformers_on_dequantized_weights(arch, method, quantized, make_pipeline):
    path = quantized(arch, method)
    want = _hf_tokens(path)
    for fmt in (None, method):  # detected, and named as LMDeploy users name it
        pipe = make_pipeline(path, model_format=fmt)
        layers = pipe._engine.runner.model.model.layers
        assert all(isinstance(layer.mlp.down_proj, Int4Linear) for layer in layers)
        got = [r.token_ids for r in pipe(TEXTS, gen_config=GREEDY, do_preprocess=False)]
        assert got == want


@pytest.mark.parametrize("engine_cfg", [dict(enable_prefix_caching=True), dict(max_prefill_token_num=5),
                                        dict(cache_max_entry_count=24, cache_block_seq_len=4)],
                         ids=["prefix-caching", "chunked-prefill", "preemption"])
def test_engine_modes_unchanged_with_int4(engine_cfg, quantized, make_pipeline):
    path = quantized("LlamaForCausalLM", "awq", 64)
    want = _hf_tokens(path)
    pipe = make_pipeline(path, **engine_cfg)
    assert [r.token_ids for r in pipe(TEXTS, gen_config=GREEDY, do_preprocess=False)] == want
    assert [r.token_ids for r in pipe(TEXTS, gen_config=GREEDY, do_preprocess=False)] == want


def test_model_format_that_disagrees_is_a_clear_error(quantized, tiny_llama):
    awq = quantized("LlamaForCausalLM", "awq")
    with pytest.raises(ConfigError, match="holds awq 4-bit weights; use model_format='awq'"):
        pipeline(str(awq), backend_config=TurbomindEngineConfig(device="cpu", model_format="gptq"))
    with pytest.raises(ConfigError, match="float weights.*lite auto_awq"):
        pipeline(str(tiny_llama), backend_config=TurbomindEngineConfig(device="cpu", model_format="awq"))


@pytest.mark.parametrize("change, message", [
    (dict(desc_act=True), "act-order"),
    (dict(bits=8), "8-bit weights are not supported"),
    (dict(bits=3), "3-bit weights are not supported"),
    (dict(group_size=48), "group_size 48 is not supported"),
    (dict(quant_method="bitsandbytes"), "quant_method 'bitsandbytes' is not supported"),
])
def test_unsupported_quantization_is_named(change, message, quantized, tmp_path):
    src = quantized("LlamaForCausalLM", "gptq")
    for f in src.iterdir():
        if f.is_file():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"].update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        pipeline(str(tmp_path), backend_config=TurbomindEngineConfig(device="cpu"))


def test_group_size_that_does_not_divide_the_layer(quantized, tiny_model_factory, tmp_path):
    src = tiny_model_factory("LlamaForCausalLM", intermediate_size=96)  # down_proj K = 96: not a multiple of 64
    path = write_quantized(src, tmp_path / "m", "awq", group=32)
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"]["group_size"] = 64
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="group_size=64 does not divide the 96 inputs"):
        pipeline(str(path), backend_config=TurbomindEngineConfig(device="cpu"))
