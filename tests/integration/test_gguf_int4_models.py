"""Acceptance (GGUF Q4 kept 4-bit): GGUF Q4_1 / Q4_0 files converted with keep_quantized load
with Int4Linear projections, and their greedy tokens on CPU equal transformers' generate() on
the same GGUF file (which dequantizes it) and our float conversion's; the embedded model runs
4-bit with model_format='awq' (Python and CLI)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from gguf_files import MIXED, Q, requantized_smollm2, smollm2_gguf, tiny_gguf
from reference import hf_greedy
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmdeploy_sdk import GenerationConfig
from lmdeploy_sdk.convert import convert
from lmdeploy_sdk.model_source import CACHE_ENV_VAR, DEFAULT_MODEL, embedded_model_dir, resolve_model_path
from lmdeploy_sdk.quant.linear import Int4Linear

TEXTS = [
    "What is the capital of France?",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Once upon a time, in a land far away, there lived a king who",
]
NEW = 16
GREEDY = GenerationConfig(max_new_tokens=NEW, ignore_eos=True)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _reference(gguf_path) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids of TEXTS, transformers' greedy tokens for them), both as transformers reads the
    GGUF file (tokenizer, and model dequantized). Our side gets the same ids, so that only the
    models are compared."""
    where = dict(pretrained_model_name_or_path=gguf_path.parent, gguf_file=gguf_path.name)
    tok = AutoTokenizer.from_pretrained(**where)
    model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32).eval()
    prompts = [tok.encode(t) for t in TEXTS]
    return prompts, [hf_greedy(model, ids, NEW) for ids in prompts]


def _tokens(pipe, prompts: list[list[int]]) -> list[list[int]]:
    return [r.token_ids for r in pipe(prompts, gen_config=GREEDY)]


def _int4_projections(pipe) -> dict[str, bool]:
    """'layer.proj' (our fused names) -> whether it is 4-bit."""
    out = {}
    for i, layer in enumerate(pipe._engine.runner.model.model.layers):
        for name in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"):
            out[f"{i}.{name}"] = isinstance(layer.get_submodule(name), Int4Linear)
    return out


@pytest.fixture(scope="module")
def embedded_int4(private_model_cache):
    return resolve_model_path(DEFAULT_MODEL, "awq")


def test_embedded_model_runs_4bit_with_transformers_and_float_tokens(embedded_int4, smollm2_dir, make_pipeline):
    assert embedded_int4 == embedded_model_dir(DEFAULT_MODEL, keep_quantized=True) != smollm2_dir
    prompts, want = _reference(smollm2_gguf())
    pipe = make_pipeline(DEFAULT_MODEL, model_format="awq")
    assert all(_int4_projections(pipe).values())
    assert _tokens(pipe, prompts) == want
    assert _tokens(make_pipeline(smollm2_dir), prompts) == want  # the float conversion agrees


def test_embedded_model_name_picks_float_or_4bit_by_model_format(embedded_int4, smollm2_dir):
    from lmdeploy_sdk import TurbomindEngineConfig, pipeline

    cfg = dict(device="cpu", cache_max_entry_count=16)
    with pipeline(DEFAULT_MODEL, backend_config=TurbomindEngineConfig(model_format="awq", **cfg)) as pipe:
        layer = pipe._engine.runner.model.model.layers[0]
        assert isinstance(layer.mlp.down_proj, Int4Linear) and isinstance(layer.self_attn.qkv_proj, Int4Linear)
        assert pipe("Hi", max_new_tokens=4).finish_reason == "length"
    for fmt in (None, "hf"):
        with pipeline(DEFAULT_MODEL, backend_config=TurbomindEngineConfig(model_format=fmt, **cfg)) as pipe:
            assert not isinstance(pipe._engine.runner.model.model.layers[0].mlp.down_proj, Int4Linear)
    config = json.loads((embedded_int4 / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "lmdeploy_int4"
    assert "quantization_config" not in json.loads((smollm2_dir / "config.json").read_text())


def test_cli_chat_runs_the_embedded_model_4bit(embedded_int4, tmp_path):
    """In a cache that holds only the 4-bit entry: chat uses it and never builds the float one."""
    models = tmp_path / "cache" / "models"
    models.mkdir(parents=True)
    (models / embedded_int4.name).symlink_to(embedded_int4)
    out = subprocess.run(
        [sys.executable, "-m", "lmdeploy_sdk", "chat", DEFAULT_MODEL, "--model-format", "awq", "--device", "cpu",
         "--max-new-tokens", "4", "--cache-max-entry-count", "16"],
        input="hello\nexit\n", capture_output=True, text=True, timeout=300,
        env=dict(os.environ, **{CACHE_ENV_VAR: str(models.parent)}),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(">>> ") == 2 and "[error]" not in out.stdout
    assert [p.name for p in models.iterdir()] == [embedded_int4.name], "no float conversion was made"


@pytest.fixture(scope="module")
def tiny_ggufs(tmp_path_factory):
    """make(arch, q4, kind_of) -> a tiny GGUF file (cached)."""
    cache = {}

    def make(arch, q4, kind_of=None):
        key = (arch, q4, tuple(sorted((kind_of or {}).items())))
        if key not in cache:
            cache[key] = tiny_gguf(tmp_path_factory.mktemp(f"gguf-{arch}") / "model.gguf", arch, q4, kind_of)
        return cache[key]

    return make


@pytest.mark.parametrize("arch, q4", [("llama", Q.Q4_0), ("llama", Q.Q4_1), ("qwen2", Q.Q4_0)],
                         ids=["llama-Q4_0", "llama-Q4_1", "qwen2-Q4_0"])
def test_tiny_gguf_q4_tokens_equal_transformers(arch, q4, tiny_ggufs, make_pipeline, tmp_path):
    src = tiny_ggufs(arch, q4)
    pipe = make_pipeline(convert(src, tmp_path / "int4", keep_quantized=True))
    assert all(_int4_projections(pipe).values())
    prompts, want = _reference(src)
    assert _tokens(pipe, prompts) == want


def test_mixed_types_load_with_float_groups(tiny_ggufs, make_pipeline, tmp_path):
    src = tiny_ggufs("llama", Q.Q4_1, MIXED)
    pipe = make_pipeline(convert(src, tmp_path / "int4", keep_quantized=True))
    assert _int4_projections(pipe) == {"0.self_attn.qkv_proj": False, "0.self_attn.o_proj": True,
                                       "0.mlp.gate_up_proj": True, "0.mlp.down_proj": True,
                                       "1.self_attn.qkv_proj": True, "1.self_attn.o_proj": True,
                                       "1.mlp.gate_up_proj": True, "1.mlp.down_proj": False}
    prompts, want = _reference(src)
    assert _tokens(pipe, prompts) == want


@pytest.mark.slow
def test_smollm2_requantized_to_q4_0_tokens_equal_transformers(make_pipeline, tmp_path):
    src = requantized_smollm2(tmp_path / "smollm2-q4_0.gguf", q4=Q.Q4_0)
    pipe = make_pipeline(convert(src, tmp_path / "int4", keep_quantized=True))
    assert all(_int4_projections(pipe).values())
    prompts, want = _reference(src)
    assert _tokens(pipe, prompts) == want
