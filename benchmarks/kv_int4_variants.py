"""What would lift an int4 KV cache's top-1 agreement: variants of the format, tried on CPU.

    python benchmarks/kv_int4_variants.py [--eval-tokens 2048] [--no-layers] [--no-prompts]

The variants are fake-quantized: keys and values are rotated, quantized and dequantized as
lmdeploy_sdk.quant.kv_cache does, then written into the unquantized (float32) cache, so a
variant needs no kernel. Each prints the share of held-out positions whose top-1 token equals
the unquantized cache's and the perplexity change (as python -m lmdeploy_sdk.quant.kv_accuracy,
whose windows it scores). Offsets: moving every key by one vector leaves the softmax unchanged
and moving every value by one vector moves the output by it, so a mean can be taken out before
quantizing and the result is exact apart from the quantization. The last variants keep the
most recent keys and values in 16 bits (a sliding window, or the sequence's block still being
filled) or quantize keys per channel over groups of tokens (KIVI's layout); they are applied
when attention reads the cache, so they need no change to what is stored. --no-layers skips the
sweep that quantizes the keys of one layer at a time; --no-prompts the scoring of the model's own
greedy answers. docs/kv_cache_quantization.md quotes its output.
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field

import torch

from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.quant.kv_accuracy import score_windows
from lmdeploy_sdk.quant.kv_cache import dequantize, hadamard, quantize

BLOCK = 64


@dataclass(frozen=True)
class Variant:
    name: str
    k_bits: int = 4  # 16: kept unquantized
    v_bits: int = 4
    k_offset: str = "none"  # none | window (mean over the prefill's tokens) | block (per 64 tokens)
    v_offset: str = "none"
    k_bits_by_layer: dict[int, int] = field(default_factory=dict)
    exact_recent: int = 0  # the last N keys and values before each query stay 16-bit (sliding)
    exact_open_block: int = 0  # the query's block of this many tokens stays 16-bit until it is full
    k_channel_group: int = 0  # keys quantized per channel over groups of this many tokens (KIVI)

    @property
    def at_read(self) -> bool:
        """Applied when attention reads the cache (patched_attention) rather than when it is written."""
        return bool(self.exact_recent or self.exact_open_block or self.k_channel_group)


def token_groups(x: torch.Tensor, group: int) -> torch.Tensor:
    """x's rows in groups of `group` consecutive tokens, the last group padded with the last row."""
    # x: [T, H, D] -> [ceil(T / group), group, H, D]
    pad = (-x.shape[0]) % group
    padded = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])]) if pad else x
    return padded.view(-1, group, *x.shape[1:])


def ungroup(groups: torch.Tensor, t: int) -> torch.Tensor:
    # [n, group, H, D] -> the first t rows, [t, H, D]
    return groups.reshape(-1, *groups.shape[2:])[:t]


def offset(x: torch.Tensor, how: str) -> torch.Tensor:
    # x: [T, H, D] -> the vector subtracted from each row, [T, H, D]
    if how == "window":
        return x.mean(0, keepdim=True).expand_as(x)
    if how == "block":
        groups = token_groups(x, BLOCK)
        return ungroup(groups.mean(1, keepdim=True).expand_as(groups), x.shape[0])
    return torch.zeros_like(x)


def fake_quantize(x: torch.Tensor, bits: int, how: str) -> torch.Tensor:
    """x as the int8/int4 cache would read it back (rotated, quantized, rotated back), after taking out an offset."""
    # x: [T, H, D] -> float32 [T, H, D]
    x = x.float()
    if bits == 16:
        return x
    b = offset(x, how)
    h = hadamard(x.shape[-1])
    return dequantize(*quantize((x - b) @ h, bits), bits) @ h + b


def fake_quantize_channels(x: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """x quantized per channel over groups of `group` consecutive tokens (asymmetric, float16 scale and zero)."""
    # x: [T, H, D] -> float32 [T, H, D]
    groups = token_groups(x.float(), group)
    lo, hi = groups.amin(1, keepdim=True), groups.amax(1, keepdim=True)
    levels = (1 << bits) - 1
    scale = ((hi - lo) / levels).half().float()
    zero = lo.half().float()
    codes = torch.where(scale > 0, ((groups - zero) / torch.where(scale > 0, scale, 1.0)).round().clamp(0, levels), 0.0)
    return ungroup(codes * scale + zero, x.shape[0])


@contextlib.contextmanager
def patched_attention(variant: Variant):
    """reference.paged_attention over an unquantized cache, reading older rows fake-quantized
    and the variant's recent rows as stored (one sequence per call, as the scored windows are)."""
    original = reference.paged_attention

    def paged_attention(q, k_cache, v_cache, meta, scale):
        # q: [T, Hq, D] -> [T, Hq, D]
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        group = q.shape[1] // k_cache.shape[2]
        start = 0
        for b, (q_len, kv_len) in enumerate(zip(meta.q_lens_cpu, meta.kv_lens_cpu)):
            k = reference.gather_kv(k_cache, meta.block_tables[b], kv_len).float()  # [kv_len, Hkv, D]
            v = reference.gather_kv(v_cache, meta.block_tables[b], kv_len).float()
            k_read = (fake_quantize_channels(k, variant.k_bits, variant.k_channel_group) if variant.k_channel_group
                      else fake_quantize(k, variant.k_bits, "none"))
            v_read = fake_quantize(v, variant.v_bits, "none")
            k, v, k_read, v_read = (x.transpose(0, 1).repeat_interleave(group, 0) for x in (k, v, k_read, v_read))
            qb = q[start : start + q_len].transpose(0, 1).float()  # [Hq, q_len, D]
            q_pos = torch.arange(kv_len - q_len, kv_len, device=q.device).unsqueeze(1)
            k_pos = torch.arange(kv_len, device=q.device).unsqueeze(0)
            exact = torch.zeros_like(k_pos > q_pos)  # [q_len, kv_len]: this key read as stored
            if variant.exact_recent:
                exact |= k_pos > q_pos - variant.exact_recent
            if variant.exact_open_block:
                exact |= k_pos >= (q_pos + 1) // variant.exact_open_block * variant.exact_open_block
            scores = torch.where(exact, qb @ k.transpose(1, 2), qb @ k_read.transpose(1, 2)) * scale
            probs = torch.softmax(scores.masked_fill(k_pos > q_pos, float("-inf")), dim=-1)
            recent = probs * exact
            out[start : start + q_len] = (recent @ v + (probs - recent) @ v_read).transpose(0, 1).to(out.dtype)
            start += q_len
        return out

    reference.paged_attention = paged_attention
    try:
        yield
    finally:
        reference.paged_attention = original


@contextlib.contextmanager
def patched_store(variant: Variant, num_layers: int):
    """reference.store_kv writing fake-quantized rows (layers counted by call order)."""
    original, calls = reference.store_kv, [0]

    def store_kv(k, v, k_cache, v_cache, slot_mapping):
        layer = calls[0] % num_layers
        calls[0] += 1
        k_bits = variant.k_bits_by_layer.get(layer, variant.k_bits)
        k = fake_quantize(k, k_bits, variant.k_offset)
        v = fake_quantize(v, variant.v_bits, variant.v_offset)
        original(k, v, k_cache, v_cache, slot_mapping)

    reference.store_kv = store_kv
    try:
        yield
    finally:
        reference.store_kv = original


def agreement(ref: list[int], got: list[int]) -> float:
    return sum(a == b for a, b in zip(ref, got)) / len(ref)


def score(model_dir: str, windows: list[list[int]], variant: Variant | None, num_layers: int):
    if variant is None:
        patch = contextlib.nullcontext()
    else:
        patch = patched_attention(variant) if variant.at_read else patched_store(variant, num_layers)
    with patch:
        return score_windows(model_dir, windows, 0, "cpu")


def prompt_windows(model_dir: str, tokenizer, num_prompts: int, passage_tokens: int, new_tokens: int):
    """Prompt + greedy answer token ids, and the positions that predict the answer's tokens."""
    from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline
    from lmdeploy_sdk.lite.calibration import heldout_text

    ids = tokenizer(heldout_text(), add_special_tokens=False)["input_ids"]
    prompts = []
    for i in range(num_prompts):
        passage = tokenizer.decode(ids[i * passage_tokens : (i + 1) * passage_tokens])
        message = {"role": "user", "content": "Summarize the following passage in a few paragraphs.\n\n" + passage}
        prompts.append(tokenizer.apply_chat_template([message], tokenize=False, add_generation_prompt=True))
    config = TurbomindEngineConfig(device="cpu", session_len=passage_tokens + new_tokens + 256)
    with pipeline(model_dir, backend_config=config) as pipe:
        answers = pipe(prompts, gen_config=GenerationConfig(max_new_tokens=new_tokens, do_sample=False),
                       do_preprocess=False)
    windows, answer_positions, offset_ = [], [], 0
    for prompt, answer in zip(prompts, answers):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        window = prompt_ids + list(answer.token_ids)
        first = offset_ + len(prompt_ids) - 1  # predicts the answer's first token
        answer_positions += range(first, first + len(answer.token_ids) - 1)
        windows.append(window)
        offset_ += len(window) - 1
    return windows, answer_positions


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoConfig, AutoTokenizer

    from lmdeploy_sdk.lite.compare import eval_windows
    from lmdeploy_sdk.model_source import DEFAULT_MODEL, resolve_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-tokens", type=int, default=2048)
    parser.add_argument("--no-layers", action="store_true", help="skip the one-layer-at-a-time sweep")
    parser.add_argument("--no-prompts", action="store_true", help="skip scoring the model's own answers")
    args = parser.parse_args(argv)
    model_dir = str(resolve_model_path(DEFAULT_MODEL))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    num_layers = AutoConfig.from_pretrained(model_dir).num_hidden_layers
    windows = eval_windows(tokenizer, args.eval_tokens, 1024)
    base = score(model_dir, windows, None, num_layers)

    variants = [
        Variant("int4 keys and values (the format)"),
        Variant("int4 values, keys in 16 bits", k_bits=16),
        Variant("int4 keys, values in 16 bits", v_bits=16),
        Variant("keys minus their window mean", k_offset="window"),
        Variant("keys and values minus their window means", k_offset="window", v_offset="window"),
        Variant("keys and values minus their 64-token block means", k_offset="block", v_offset="block"),
        Variant("int4 values minus their window mean, keys in 16 bits", k_bits=16, v_offset="window"),
        Variant("int4, the last 32 tokens before each query in 16 bits", exact_recent=32),
        Variant("int4, the last 64 tokens before each query in 16 bits", exact_recent=64),
        Variant("int4, the block of 64 being filled in 16 bits", exact_open_block=64),
        Variant("int4 keys per channel over 64-token groups (KIVI), values per row, the open group in 16 bits",
                k_channel_group=64, exact_open_block=64),
    ]
    if not args.no_layers:
        variants += [Variant(f"int4 keys in layer {i} only", k_bits=16, v_bits=16, k_bits_by_layer={i: 4})
                     for i in range(num_layers)]
    print(f"{sum(len(w) - 1 for w in windows)} held-out positions; unquantized perplexity {base.perplexity:.3f}")
    print("| variant | top-1 agreement | perplexity |")
    print("|---|---:|---:|")
    for variant in variants:
        got = score(model_dir, windows, variant, num_layers)
        print(f"| {variant.name} | {100 * agreement(base.top1, got.top1):.2f}% "
              f"| {100 * (got.perplexity / base.perplexity - 1):+.2f}% |", flush=True)
    if not args.no_prompts:
        prompt_ids, positions = prompt_windows(model_dir, tokenizer, 8, 600, 160)
        ref = score(model_dir, prompt_ids, None, num_layers).top1
        print(f"\nthe model's own greedy answers to 8 summary prompts ({len(positions)} positions):")
        for bits in (8, 4):
            got = score(model_dir, prompt_ids, Variant(f"int{bits}", k_bits=bits, v_bits=bits), num_layers).top1
            print(f"int{bits}: {100 * agreement([ref[p] for p in positions], [got[p] for p in positions]):.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
