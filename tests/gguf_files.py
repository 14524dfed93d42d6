"""GGUF files for tests, written with gguf-py's GGUFWriter and quants.quantize (independently of
lmdeploy_sdk): the embedded SmolLM2 re-encoded in other tensor types, and tiny random llama /
qwen2 models that borrow SmolLM2's tokenizer and chat template metadata.

Tensors are given as numpy arrays in GGUF's own row order ([rows, cols] = [N, K]); random
weights need no llama.cpp q/k row permutation (transformers' loader undoes one that was never
applied, which only makes a different random model, the same for every reader).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

Q = GGMLQuantizationType
# A fused group mixed on purpose: layer 0's attn_v and layer 1's ffn_down are not Q4.
MIXED = {"blk.0.attn_v.weight": Q.Q8_0, "blk.1.ffn_down.weight": Q.F16}


def smollm2_gguf() -> Path:
    from lmdeploy_sdk.model_source import DEFAULT_MODEL, EMBEDDED_MODELS

    return EMBEDDED_MODELS[DEFAULT_MODEL].gguf_path()


def write_gguf(
    out: Path, template: GGUFReader, arch: str, tensors: dict[str, tuple[np.ndarray, Q]],
    metadata: dict[str, tuple] | None = None,
) -> Path:
    """A GGUF file of `arch` with `template`'s metadata (keys of its architecture renamed to
    `arch`, `metadata` (name -> (value, type[, array item type])) replacing or adding keys) and
    `tensors`: name -> (array, type), where a float32 array is encoded in its type and a uint8
    array is taken as that type's blocks."""
    metadata = dict(metadata or {})
    old_arch = template.fields["general.architecture"].contents()
    writer = GGUFWriter(str(out), arch)
    for field in template.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        name = f"{arch}.{field.name.removeprefix(old_arch + '.')}" if field.name.startswith(old_arch + ".") else field.name
        if name in metadata:
            continue
        sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub_type)
    for name, (value, kind, *sub_type) in metadata.items():
        writer.add_key_value(name, value, kind, sub_type=sub_type[0] if sub_type else None)
    for name, (array, kind) in tensors.items():
        if array.dtype == np.uint8:
            writer.add_tensor(name, array, raw_dtype=kind)
        elif kind in (Q.F32, Q.F16):
            writer.add_tensor(name, array.astype(np.float32 if kind == Q.F32 else np.float16))
        else:
            writer.add_tensor(name, quants.quantize(array.astype(np.float32), kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(out)


def requantized_smollm2(out: Path, kind_of: dict[str, Q] | None = None, q4: Q = Q.Q4_0) -> Path:
    """The embedded SmolLM2 with its Q4_1 tensors re-encoded as `q4` (from their dequantized
    values), and any tensor named in `kind_of` in that type instead."""
    reader = GGUFReader(str(smollm2_gguf()))
    kind_of = kind_of or {}
    tensors = {}
    for t in reader.tensors:
        kind = kind_of.get(t.name, q4 if t.tensor_type == Q.Q4_1 else t.tensor_type)
        if kind == t.tensor_type:
            tensors[t.name] = (np.array(t.data), kind)
        else:
            tensors[t.name] = (quants.dequantize(t.data, t.tensor_type), kind)
    return write_gguf(out, reader, "llama", tensors)


def _smaller_vocab(reader: GGUFReader, vocab: int) -> dict[str, tuple]:
    """SmolLM2's tokenizer cut to its first `vocab` tokens (special tokens, bytes, first merges)
    and the merges among them: the same tokenizer for short words, and fast to load."""
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()[:vocab]
    kept = set(tokens)
    merges = [m for m in reader.fields["tokenizer.ggml.merges"].contents()
              if m.replace(" ", "") in kept and all(part in kept for part in m.split(" "))]
    array, string, i32 = GGUFValueType.ARRAY, GGUFValueType.STRING, GGUFValueType.INT32
    return {"tokenizer.ggml.tokens": (tokens, array, string), "tokenizer.ggml.merges": (merges, array, string),
            "tokenizer.ggml.token_type": (reader.fields["tokenizer.ggml.token_type"].contents()[:vocab], array, i32)}


def tiny_gguf(
    out: Path, arch: str = "llama", q4: Q = Q.Q4_0, kind_of: dict[str, Q] | None = None, seed: int = 0,
    layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2, ffn: int = 128, vocab: int = 2048,
) -> Path:
    """A tiny random `arch` ('llama' or 'qwen2', which adds q/k/v biases) model with SmolLM2's
    tokenizer cut to `vocab` tokens: decoder projections in `q4` (or their type in `kind_of`),
    the rest F32."""
    reader = GGUFReader(str(smollm2_gguf()))
    rng = np.random.default_rng(seed)
    kind_of = kind_of or {}
    head_dim, kv = hidden // heads, hidden // heads * kv_heads

    def w(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tensors = {"token_embd.weight": (w(vocab, hidden, scale=0.5), Q.F32),
               "output.weight": (w(vocab, hidden, scale=0.5), Q.F32),  # untied: tied random ones repeat a token
               "output_norm.weight": (1 + w(hidden), Q.F32)}
    for i in range(layers):
        shapes = {"attn_q": (hidden, hidden), "attn_k": (kv, hidden), "attn_v": (kv, hidden),
                  "attn_output": (hidden, hidden), "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden),
                  "ffn_down": (hidden, ffn)}
        for part, shape in shapes.items():
            name = f"blk.{i}.{part}.weight"
            tensors[name] = (w(*shape), kind_of.get(name, q4))
        tensors[f"blk.{i}.attn_norm.weight"] = (1 + w(hidden), Q.F32)
        tensors[f"blk.{i}.ffn_norm.weight"] = (1 + w(hidden), Q.F32)
        if arch == "qwen2":
            for part, (rows, _) in list(shapes.items())[:3]:
                tensors[f"blk.{i}.{part}.bias"] = (w(rows, scale=0.5), Q.F32)
    u32, f32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32
    metadata = {f"{arch}.{key}": value for key, value in {
        "block_count": (layers, u32), "embedding_length": (hidden, u32), "feed_forward_length": (ffn, u32),
        "attention.head_count": (heads, u32), "attention.head_count_kv": (kv_heads, u32),
        "rope.dimension_count": (head_dim, u32), "context_length": (512, u32), "rope.freq_base": (10000.0, f32),
        "vocab_size": (vocab, u32),
    }.items()}
    metadata.update(_smaller_vocab(reader, vocab))
    return write_gguf(out, reader, arch, tensors, metadata)
