"""load_model_config: config.json of every architecture, and the errors for bad model directories."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from lmdeploy_sdk.errors import ModelLoadError
from lmdeploy_sdk.models import (
    SUPPORTED_ARCHITECTURES,
    ConfigError,
    UnsupportedArchitectureError,
    load_model_config,
)
from tiny_models import ARCHITECTURES


def _write_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_every_test_architecture_is_supported():
    assert set(ARCHITECTURES) <= set(SUPPORTED_ARCHITECTURES)


def test_fields_match_the_checkpoint(tiny_model_any):
    cfg = load_model_config(tiny_model_any)
    raw = json.loads((tiny_model_any / "config.json").read_text())
    assert cfg.architecture == raw["architectures"][0]
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_layers) == (
        raw["vocab_size"], raw["hidden_size"], raw["num_hidden_layers"]
    )
    assert (cfg.num_heads, cfg.num_kv_heads) == (raw["num_attention_heads"], raw["num_key_value_heads"])
    assert cfg.head_dim == raw.get("head_dim", raw["hidden_size"] // raw["num_attention_heads"])
    assert cfg.max_position_embeddings == 4096 and cfg.rms_norm_eps == raw["rms_norm_eps"]
    assert cfg.eos_token_ids == [raw["eos_token_id"]] and cfg.bos_token_id == raw["bos_token_id"]
    assert cfg.torch_dtype == torch.float32 and cfg.tie_word_embeddings is False
    assert cfg.rope_theta == 10000.0 and cfg.rope_parameters is None


def test_architecture_flags():
    # (qkv bias, o bias, q/k norm) as the HF implementations define them
    from lmdeploy_sdk.models.registry import arch_spec

    flags = {}
    for arch in SUPPORTED_ARCHITECTURES:
        cfg = arch_spec(arch).parse_config({"architectures": [arch], "bias": False}, Path("/nonexistent"))
        flags[arch] = (cfg.attention_bias, cfg.attention_out_bias, cfg.qk_norm)
    assert flags["Qwen2ForCausalLM"] == (True, False, False)
    assert flags["Qwen3ForCausalLM"] == (False, False, True)
    assert flags["LlamaForCausalLM"] == flags["MistralForCausalLM"] == flags["InternLM2ForCausalLM"] == (
        False, False, False
    )
    # vision-language: their text model's flags (a Llama when config.json names none, as in transformers)
    assert flags["LlavaForConditionalGeneration"] == flags["LlavaNextForConditionalGeneration"] == (False, False, False)


def test_eos_ids_include_generation_config(tmp_path, tiny_llama):
    shutil.copy(tiny_llama / "config.json", tmp_path / "config.json")
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 2, 9]}))
    assert load_model_config(tmp_path).eos_token_ids == [2, 7, 9]


def test_legacy_rope_format_and_bf16_dtype(tmp_path):
    # transformers 4.x style: rope_theta + rope_scaling at top level, torch_dtype
    cfg = load_model_config(_write_config(tmp_path, {
        "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
        "rope_theta": 500000.0, "torch_dtype": "bfloat16", "eos_token_id": [5, 6],
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    }))
    assert cfg.rope_theta == 500000.0 and cfg.torch_dtype == torch.bfloat16
    assert cfg.rope_type == "llama3" and cfg.rope_parameters["factor"] == 8.0
    assert cfg.eos_token_ids == [5, 6]


def test_qwen3_defaults_come_from_transformers(tmp_path):
    cfg = load_model_config(_write_config(tmp_path, {"architectures": ["Qwen3ForCausalLM"]}))
    hf = transformers.Qwen3Config()
    assert (cfg.head_dim, cfg.num_kv_heads, cfg.vocab_size) == (hf.head_dim, hf.num_key_value_heads, hf.vocab_size)


def test_internlm2_uses_its_own_defaults(tmp_path):
    # InternLM2Config defaults: bias=True, num_key_value_heads = num_attention_heads, legacy rope "type"
    cfg = load_model_config(_write_config(tmp_path, {
        "architectures": ["InternLM2ForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
        "rope_scaling": {"type": "dynamic", "factor": 2.0},
    }))
    assert cfg.attention_bias and cfg.attention_out_bias and not cfg.mlp_bias
    assert cfg.num_kv_heads == 4 and cfg.vocab_size == 103168 and cfg.model_type == "internlm2"
    assert cfg.rope_parameters == {"rope_type": "dynamic", "factor": 2.0}


def test_model_type_names_the_architecture_when_architectures_is_absent(tmp_path):
    cfg = load_model_config(_write_config(tmp_path, {"model_type": "qwen2"}))
    assert cfg.architecture == "Qwen2ForCausalLM"


def test_unknown_architecture_lists_supported(tmp_path):
    _write_config(tmp_path, {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    with pytest.raises(UnsupportedArchitectureError) as info:
        load_model_config(tmp_path)
    message = str(info.value)
    assert "GPT2LMHeadModel" in message and str(tmp_path / "config.json") in message
    assert all(arch in message for arch in SUPPORTED_ARCHITECTURES)
    assert isinstance(info.value, ValueError)


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_config(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"config\.json not found"):
        load_model_config(tmp_path)


def test_unparsable_config_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse .*config.json"):
        load_model_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="JSON object"):
        load_model_config(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"architectures": []}, "non-empty list"),
        ({"num_attention_heads": 4, "num_key_value_heads": 3}, "multiple of"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"rope_scaling": {"rope_type": "longrope", "long_factor": [1.0], "short_factor": [1.0]}}, "'longrope'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "low_freq_factor"),
        ({"eos_token_id": "</s>"}, "eos_token_id"),
    ],
)
def test_invalid_configs_raise_config_error(tmp_path, overrides, match):
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4, **overrides}
    with pytest.raises(ConfigError, match=match):
        load_model_config(_write_config(tmp_path, config))
