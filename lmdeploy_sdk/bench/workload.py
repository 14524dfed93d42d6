"""The fixed, seeded request mixes of the throughput benchmark, and named model shapes.

`sharegpt`: ShareGPT-like lengths without the dataset (it cannot be downloaded here): input
and output lengths are drawn from log-normal distributions fitted to the shape
of ShareGPT conversations (long tail, median input ~ 150 and output ~ 170 tokens),
clipped to [4, 1024]. The same seed always gives the same 1000 requests.

`long`: long-context requests (documents, RAG, long chats): inputs uniform in
LONG_INPUT_RANGE tokens, outputs in LONG_OUTPUT_RANGE; there the KV cache, not the
weights, bounds how many sequences decode at once (run it with --session-len 32768).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

# log-normal (mu, sigma) of input and output token counts, and the clip range
INPUT_LOGNORMAL = (5.0, 1.0)
OUTPUT_LOGNORMAL = (5.15, 0.9)
LENGTH_RANGE = (4, 1024)
LONG_INPUT_RANGE = (8192, 24576)
LONG_OUTPUT_RANGE = (512, 1536)
MIXES = ("sharegpt", "long")

SHAPES = {
    # Llama-3-8B: hidden 4096, 32 layers, 32 heads, 8 KV heads, ffn 14336, vocab 128256
    "llama3-8b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
        max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0, torch_dtype="bfloat16",
        bos_token_id=128000, eos_token_id=128001, tie_word_embeddings=False, hidden_act="silu",
    ),
    # a small shape for smoke runs
    "llama-tiny": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=256, intermediate_size=512,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=49152,
        max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, torch_dtype="bfloat16",
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, hidden_act="silu",
    ),
}


@dataclass(frozen=True)
class BenchRequest:
    prompt_ids: list[int]
    output_len: int


def _length(rng: random.Random, mu: float, sigma: float) -> int:
    lo, hi = LENGTH_RANGE
    return max(lo, min(hi, int(rng.lognormvariate(mu, sigma))))


def sharegpt_like(num: int, vocab_size: int, seed: int = 0) -> list[BenchRequest]:
    """`num` requests with random token ids (avoiding the first 1000 ids, where specials live)."""
    rng = random.Random(seed)
    out = []
    for _ in range(num):
        n_in = _length(rng, *INPUT_LOGNORMAL)
        n_out = _length(rng, *OUTPUT_LOGNORMAL)
        out.append(BenchRequest([rng.randrange(1000, vocab_size) for _ in range(n_in)], n_out))
    return out


def long_context(num: int, vocab_size: int, seed: int = 0) -> list[BenchRequest]:
    """`num` long-context requests (the `long` mix), random token ids as sharegpt_like's."""
    rng = random.Random(seed)
    return [BenchRequest([rng.randrange(1000, vocab_size) for _ in range(rng.randint(*LONG_INPUT_RANGE))],
                         rng.randint(*LONG_OUTPUT_RANGE)) for _ in range(num)]


def request_mix(mix: str, num: int, vocab_size: int, seed: int = 0) -> list[BenchRequest]:
    if mix not in MIXES:
        raise ValueError(f"unknown request mix {mix!r}; known: {', '.join(MIXES)}")
    return (sharegpt_like if mix == "sharegpt" else long_context)(num, vocab_size, seed)


def write_shape(shape: str, tokenizer_dir: Path, out: Path, int4_group: int | None = None,
                max_positions: int | None = None) -> Path:
    """A model directory with the named shape's config.json and a tokenizer (weights: random at
    load); int4_group: declare 4-bit AWQ projections of that group size instead of bf16;
    max_positions: raise the shape's max_position_embeddings (long-context runs)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {sorted(SHAPES)}")
    out.mkdir(parents=True, exist_ok=True)
    config = dict(SHAPES[shape])
    if max_positions is not None and max_positions > config["max_position_embeddings"]:
        config["max_position_embeddings"] = max_positions
    if int4_group is not None:
        config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": int4_group,
                                         "zero_point": True, "version": "gemm"}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for f in Path(tokenizer_dir).iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "chat_template.jinja"):
            (out / f.name).write_bytes(f.read_bytes())
    return out
