"""`lmdeploy_sdk.lite.auto_awq` on tiny random Llama / Qwen2 / Qwen3 models: the output is an
AutoAWQ checkpoint (checked with an independent unpacker written from AutoAWQ's documented
layout), it loads in pipeline() detected and as model_format='awq', its greedy tokens equal
transformers' on the dequantized weights, and dequantized weights undo the folded scales."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import hf_greedy
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmdeploy_sdk import GenerationConfig
from lmdeploy_sdk.lite import auto_awq
from lmdeploy_sdk.quant.linear import Int4Linear

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
AWQ_COLUMN_OF_NIBBLE = (0, 2, 4, 6, 1, 3, 5, 7)
G = 32
TEXTS = ["Hello", "The quick brown fox jumps over the lazy dog.", "Once upon a time, in a land far away"]
NEW = 10


def unpack(words: torch.Tensor) -> np.ndarray:
    """AutoAWQ int32 [R, C/8] -> uint8 [R, C]: nibble j of word w is column 8w + AWQ_COLUMN_OF_NIBBLE[j]."""
    w = words.numpy().view(np.uint32)
    out = np.zeros((w.shape[0], w.shape[1] * 8), dtype=np.uint8)
    for j, col in enumerate(AWQ_COLUMN_OF_NIBBLE):
        out[:, col::8] = (w >> np.uint32(4 * j)) & np.uint32(0xF)
    return out


def dequantized(state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """float32 [N, K] = (q - z) * s of one projection."""
    q = unpack(state[f"{prefix}.qweight"]).astype(np.float32)  # [K, N]
    z = unpack(state[f"{prefix}.qzeros"]).astype(np.float32)  # [K/G, N]
    s = state[f"{prefix}.scales"].float().numpy()  # [K/G, N]
    g = q.shape[0] // s.shape[0]
    return torch.from_numpy(((q - np.repeat(z, g, axis=0)) * np.repeat(s, g, axis=0)).T.copy())


def float_twin(awq_dir: Path, out: Path) -> Path:
    """The AWQ checkpoint with every projection dequantized, as a float HF directory."""
    state = load_file(str(awq_dir / "model.safetensors"))
    twin = {k: v.float() for k, v in state.items() if not k.endswith((".qweight", ".qzeros", ".scales"))}
    for key in state:
        if key.endswith(".qweight"):
            prefix = key.removesuffix(".qweight")
            twin[f"{prefix}.weight"] = dequantized(state, prefix)
    out.mkdir()
    save_file({k: v.contiguous() for k, v in twin.items()}, str(out / "model.safetensors"))
    config = json.loads((awq_dir / "config.json").read_text())
    del config["quantization_config"]
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config))
    for f in awq_dir.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", "config.json"):
            (out / f.name).write_bytes(f.read_bytes())
    return out


@pytest.fixture(scope="module")
def quantized(tiny_model_factory, tmp_path_factory):
    """make(arch, **overrides) -> (float dir, AWQ dir), cached."""
    cache = {}

    def make(arch: str, search_scale: bool = False, **overrides):
        key = (arch, search_scale, json.dumps(overrides, sort_keys=True))
        if key not in cache:
            src = tiny_model_factory(arch, **overrides)
            out = tmp_path_factory.mktemp(f"awq-{arch}") / "work_dir"
            auto_awq(str(src), out, calib_samples=8, calib_seqlen=64, w_group_size=G, search_scale=search_scale,
                     device="cpu")
            cache[key] = (src, out)
        return cache[key]

    return make


ARCHS = ["LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"]


@pytest.mark.parametrize("arch", ARCHS)
def test_layout_is_autoawq(arch, quantized):
    src, out = quantized(arch)
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not any(name.startswith(".") for name in os.listdir(out.parent))  # no temp dir left beside it
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "awq", "bits": 4, "group_size": G, "zero_point": True,
                                             "version": "gemm", "modules_to_not_convert": None}
    assert config["architectures"] == [arch]
    source = load_file(str(src / "model.safetensors"))
    state = load_file(str(out / "model.safetensors"))
    for name, w in source.items():
        prefix = name.removesuffix(".weight")
        if prefix.endswith(PROJECTIONS):
            n, k = w.shape
            assert name not in state
            for suffix, dtype, shape in (("qweight", torch.int32, (k, n // 8)), ("qzeros", torch.int32, (k // G, n // 8)),
                                         ("scales", torch.float16, (k // G, n))):
                assert state[f"{prefix}.{suffix}"].dtype == dtype and state[f"{prefix}.{suffix}"].shape == shape
        else:  # embeddings, norms, lm_head, Qwen2's q/k/v biases, Qwen3's q_norm/k_norm: fp16
            assert state[name].dtype == torch.float16 and state[name].shape == w.shape, name
    expected = sum(name.removesuffix(".weight").endswith(PROJECTIONS) for name in source)
    assert sum(key.endswith(".qweight") for key in state) == expected == 7 * 2


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_in_pipeline_and_matches_transformers_on_the_dequantized_weights(arch, quantized, make_pipeline,
                                                                             tmp_path):
    _, out = quantized(arch)
    twin = AutoModelForCausalLM.from_pretrained(float_twin(out, tmp_path / "twin"), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(out)
    want = [hf_greedy(twin, tok.encode(t), NEW) for t in TEXTS]
    for fmt in (None, "awq"):  # detected, and named as LMDeploy users name it
        pipe = make_pipeline(out, model_format=fmt)
        assert all(isinstance(layer.mlp.down_proj, Int4Linear) for layer in pipe._engine.runner.model.model.layers)
        got = pipe(TEXTS, gen_config=GenerationConfig(max_new_tokens=NEW, ignore_eos=True), do_preprocess=False)
        assert [r.token_ids for r in got] == want


def _row_scales(scaled: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """[N]: per row the least-squares r with w ~ r * scaled (a row scale folded in by a later group)."""
    return (scaled * w).sum(1) / (scaled * scaled).sum(1)


@pytest.mark.parametrize("arch, overrides", [("LlamaForCausalLM", {}), ("Qwen3ForCausalLM", {}),
                                             ("LlamaForCausalLM", {"num_key_value_heads": 4})],
                         ids=["llama-gqa", "qwen3", "llama-mha"])
def test_dequantized_weights_undo_the_folded_scales(arch, overrides, quantized):
    """Norm groups: input_layernorm / s and q, k, v columns * s; post_attention_layernorm / s2 and
    gate, up columns * s2. Linear groups: up rows / s3 and down columns * s3; v rows / s4 and o
    columns * s4 only without GQA. With those taken out every projection is near its float
    weights, and the unclipped q/k are within half a step of W * s."""
    src, out = quantized(arch, **overrides)
    source = load_file(str(src / "model.safetensors"))
    state = load_file(str(out / "model.safetensors"))
    mha = overrides.get("num_key_value_heads") == 4
    for i in range(2):
        p = f"model.layers.{i}."
        w = {proj: source[p + proj + ".weight"] for proj in PROJECTIONS}
        deq = {proj: dequantized(state, p + proj) for proj in PROJECTIONS}
        s_attn = source[p + "input_layernorm.weight"] / state[p + "input_layernorm.weight"].float()  # [H]
        s_mlp = source[p + "post_attention_layernorm.weight"] / state[p + "post_attention_layernorm.weight"].float()
        assert not torch.allclose(s_attn, torch.ones_like(s_attn), atol=0.05)  # scales were applied
        undone = {proj: deq[proj] / (s_attn if proj.startswith("self_attn") else s_mlp) for proj in PROJECTIONS[:3]}
        undone.update({proj: deq[proj] / s_mlp for proj in PROJECTIONS[4:6]})
        r_up = _row_scales(undone["mlp.up_proj"], w["mlp.up_proj"])  # [I]
        undone["mlp.up_proj"] = undone["mlp.up_proj"] * r_up.unsqueeze(1)
        undone["mlp.down_proj"] = deq["mlp.down_proj"] / r_up
        r_v = _row_scales(undone["self_attn.v_proj"], w["self_attn.v_proj"])
        assert torch.allclose(r_v, torch.ones_like(r_v), atol=0.05) != mha  # v rows scaled only without GQA
        undone["self_attn.v_proj"] = undone["self_attn.v_proj"] * r_v.unsqueeze(1)
        undone["self_attn.o_proj"] = deq["self_attn.o_proj"] / r_v if mha else deq["self_attn.o_proj"]
        for proj in PROJECTIONS:
            assert (undone[proj] - w[proj]).norm() < 0.15 * w[proj].norm(), (i, proj)
        for proj in PROJECTIONS[:2]:  # q, k: not clipped, plain rounding of W * s
            step = state[p + proj + ".scales"].float().t().repeat_interleave(G, dim=1)  # [N, K]
            assert ((deq[proj] - w[proj] * s_attn).abs() <= 0.5 * step * 1.01 + 1e-3).all(), (i, proj)


def test_search_scale_output_loads_and_differs(quantized, make_pipeline):
    _, fixed = quantized("LlamaForCausalLM")
    _, searched = quantized("LlamaForCausalLM", search_scale=True)
    a, b = (load_file(str(d / "model.safetensors")) for d in (fixed, searched))
    assert not torch.equal(a["model.layers.0.input_layernorm.weight"], b["model.layers.0.input_layernorm.weight"])
    pipe = make_pipeline(searched)
    assert pipe("Hello", gen_config=GenerationConfig(max_new_tokens=4, ignore_eos=True)).generate_token_len == 4


def test_tied_embeddings_write_no_lm_head(tiny_model_factory, tmp_path, make_pipeline):
    src = tiny_model_factory("LlamaForCausalLM", tie_word_embeddings=True)
    out = auto_awq(str(src), tmp_path / "tied", calib_dataset="random", calib_samples=2, calib_seqlen=32,
                   w_group_size=64, w_sym=True, device="cpu")
    state = load_file(str(out / "model.safetensors"))
    assert "lm_head.weight" not in state and "model.embed_tokens.weight" in state
    assert all((unpack(v) == 8).all() for k, v in state.items() if k.endswith(".qzeros"))  # w_sym: z = 8
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    reply = make_pipeline(out)("Hi", gen_config=GenerationConfig(max_new_tokens=3, ignore_eos=True))
    assert reply.generate_token_len == 3


def test_bad_arguments_fail_before_any_work(tiny_model_factory, tiny_llama, quantized, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"already holds quantized weights \(awq\); quantize the float model"):
        auto_awq(str(quantized("LlamaForCausalLM")[1]), out, w_group_size=32)
    with pytest.raises(ValueError, match=r"w_bits=8 is not supported"):
        auto_awq(str(tiny_llama), out, w_bits=8)
    with pytest.raises(ValueError, match=r"group_size=128 does not divide the 64 inputs of "
                                         r"model\.layers\.0\.self_attn\.q_proj \(64 -> 64\)"):
        auto_awq(str(tiny_llama), out, w_group_size=128)
    with pytest.raises(ValueError, match=r"group_size=48 is not supported"):
        auto_awq(str(tiny_llama), out, w_group_size=48)
    with pytest.raises(ValueError, match=r"InternLM2ForCausalLM \(remote code.*supported: LlamaForCausalLM, "
                                         r"MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"):
        auto_awq(str(tiny_model_factory("InternLM2ForCausalLM")), out, w_group_size=32)
    with pytest.raises(ValueError, match=r"calib_dataset 'c4' must be downloaded"):
        auto_awq(str(tiny_llama), out, calib_dataset="c4", w_group_size=32)
    with pytest.raises(ValueError, match=r"device='cuda:7'"):
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
        auto_awq(str(tiny_llama), out, device="cuda:7", w_group_size=32)
    assert not out.exists()


def test_existing_work_dir_and_a_failed_write_leave_nothing(tiny_llama, tmp_path, monkeypatch):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(taken)):
        auto_awq(str(tiny_llama), taken, w_group_size=32)
    assert (taken / "keep.txt").read_text() == "mine"

    import lmdeploy_sdk.lite.api as api

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # a run killed while writing

    monkeypatch.setattr(api, "write_awq_model", crash)
    with pytest.raises(KeyboardInterrupt):
        auto_awq(str(tiny_llama), tmp_path / "new", calib_dataset="random", calib_samples=1, calib_seqlen=16,
                 w_group_size=32, device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
