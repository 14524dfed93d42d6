"""Plain-torch ops: the ground truth for the native kernels and the CPU path.

Every function here is the definition of its op; lmdeploy_sdk.native must match
it (tests/gpu compares them on random inputs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lmdeploy_sdk.ops.metadata import AttentionMetadata
from lmdeploy_sdk.quant.int4 import Int4Weight
from lmdeploy_sdk.quant.kv_cache import QuantizedKVCache

# A linear op's weight: a [N, K] tensor, or 4-bit (quant.int4), which is dequantized here.
Weight = torch.Tensor | Int4Weight
# One of K or V of a layer's paged cache: [num_blocks, block_size, Hkv, D] in the model's dtype,
# or int8/int4 (quant.kv_cache), quantized on write and dequantized on read here.
KVCache = torch.Tensor | QuantizedKVCache


def argmax(logits: torch.Tensor) -> torch.Tensor:
    # logits: [S, V] -> int64 [S]: the first index of the largest value (NaN counts as largest)
    return logits.argmax(dim=-1)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # x: [T, H] (or [T, heads, D] normalised over the last dim); weight: [H]
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """residual <- x + residual; returns (rms_norm(residual), residual)."""
    # x, residual: [T, H]
    summed = x + residual
    return rms_norm(summed, weight, eps), summed


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding, GPT-NeoX layout (rotate_half), as HF Llama/Qwen/Mistral/InternLM2.

    cos_sin: [max_positions, D] float32, first D/2 columns cos, last D/2 sin
    (already multiplied by the rope attention scaling, if any).
    """
    # q: [T, Hq, D], k: [T, Hkv, D], positions: [T] int64
    half = q.shape[-1] // 2
    cs = cos_sin.index_select(0, positions)  # [T, D]
    cos = cs[:, :half].unsqueeze(1)  # [T, 1, D/2]
    sin = cs[:, half:].unsqueeze(1)

    def rotate(x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        x1, x2 = xf[..., :half], xf[..., half:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)

    return rotate(q), rotate(k)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    # x: [T, 2I] (gate | up) -> [T, I]
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def linear(x: torch.Tensor, weight: Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """nn.Linear: x @ weight.T + bias, accumulated in fp32 and rounded once (bias included).
    A 4-bit weight is dequantized (Int4Weight.dequantize, in x's dtype) first."""
    # x: [..., K]; weight: [N, K]; bias: [N] or None -> [..., N]
    if isinstance(weight, Int4Weight):
        weight = weight.dequantize(x.dtype)
    return F.linear(x, weight, bias)


def rms_norm_linear(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A pre-norm projection: (linear(rms_norm(x + residual)), x + residual); without a
    residual (the first layer), (linear(rms_norm(x)), x)."""
    # x, residual: [T, K]; norm_weight: [K]; weight: [N, K] -> ([T, N], [T, K])
    if residual is None:
        return linear(rms_norm(x, norm_weight, eps), weight, bias), x
    normed, summed = add_rms_norm(x, residual, norm_weight, eps)
    return linear(normed, weight, bias), summed


def rms_norm_gated_linear(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    gate_up_weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated MLP up to its down projection: (silu_and_mul(rms_norm_linear(...)), x + residual)."""
    # x, residual: [T, K]; gate_up_weight: [2I, K] (gate | up) -> ([T, I], [T, K])
    gate_up, summed = rms_norm_linear(x, residual, norm_weight, eps, gate_up_weight, bias)
    return silu_and_mul(gate_up), summed


def store_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: KVCache,
    v_cache: KVCache,
    slot_mapping: torch.Tensor,
) -> None:
    """Write the new tokens' keys and values into the paged cache, in place (quantized
    per row for an int8/int4 cache; negative slots, padding, are skipped there)."""
    # k, v: [T, Hkv, D]; k_cache, v_cache: [num_blocks, block_size, Hkv, D]; slot_mapping: [T]
    if isinstance(k_cache, QuantizedKVCache):
        k_cache.store(k, slot_mapping)
        v_cache.store(v, slot_mapping)
        return
    nb, bs, h, d = k_cache.shape
    k_cache.view(nb * bs, h, d).index_copy_(0, slot_mapping, k.to(k_cache.dtype))
    v_cache.view(nb * bs, h, d).index_copy_(0, slot_mapping, v.to(v_cache.dtype))


def rope_store_kv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    cos_sin: torch.Tensor,
    k_cache: KVCache,
    v_cache: KVCache,
    slot_mapping: torch.Tensor,
) -> torch.Tensor:
    """apply_rope, then store_kv of the rotated k and v; returns the rotated q, as paged_attention
    over this cache takes it: for an int8/int4 cache also in the stored rows' basis (k_cache.rotate)."""
    # q: [T, Hq, D], k, v: [T, Hkv, D] -> [T, Hq, D]
    q, k = apply_rope(q, k, positions, cos_sin)
    store_kv(k, v, k_cache, v_cache, slot_mapping)
    return k_cache.rotate(q) if isinstance(k_cache, QuantizedKVCache) else q


def rms_norm_rope_store_kv(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    qkv_weight: torch.Tensor,
    bias: torch.Tensor | None,
    num_heads: int,
    num_kv_heads: int,
    positions: torch.Tensor,
    cos_sin: torch.Tensor,
    k_cache: KVCache,
    v_cache: KVCache,
    slot_mapping: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention up to the attention itself: the pre-norm qkv projection (rms_norm_linear),
    rope of q and k and the cache write of k and v (rope_store_kv); (q, x + residual)."""
    # x, residual: [T, K]; qkv_weight: [(Hq + 2 Hkv) * D, K] ([q | k | v]); caches:
    # [num_blocks, block_size, Hkv, D] -> (q [T, Hq, D], [T, K])
    qkv, summed = rms_norm_linear(x, residual, norm_weight, eps, qkv_weight, bias)
    q, k, v = qkv_heads(qkv, num_heads, num_kv_heads, k_cache.shape[-1])
    return rope_store_kv(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping), summed


def qkv_heads(
    qkv: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A [q | k | v] projection's heads, as views (no copy)."""
    # qkv: [T, (Hq + 2 Hkv) * D] -> q [T, Hq, D], k [T, Hkv, D], v [T, Hkv, D]
    t, d = qkv.shape[0], head_dim
    q, k, v = qkv.split([num_heads * d, num_kv_heads * d, num_kv_heads * d], dim=-1)
    return q.view(t, num_heads, d), k.view(t, num_kv_heads, d), v.view(t, num_kv_heads, d)


def gather_kv(
    cache: KVCache, block_table: torch.Tensor, length: int
) -> torch.Tensor:
    """The first `length` cached tokens of one sequence, in order (float32 from an int8/int4 cache)."""
    # cache: [num_blocks, block_size, Hkv, D]; block_table: [max_blocks] -> [length, Hkv, D]
    if isinstance(cache, QuantizedKVCache):
        return cache.gather(block_table, length)
    bs = cache.shape[1]
    nblocks = (length + bs - 1) // bs
    return cache.index_select(0, block_table[:nblocks].long()).flatten(0, 1)[:length]


def paged_attention(
    q: torch.Tensor,
    k_cache: KVCache,
    v_cache: KVCache,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Causal attention of each sequence's new tokens over its whole cached context.

    Covers prefill, chunked prefill, prefill on a cached prefix and decode alike
    (see AttentionMetadata). GQA: query head h reads kv head h // (Hq // Hkv). Over an
    int8/int4 cache, whose rows are stored rotated, q comes in their basis (as rope_store_kv
    returns it) and the output is rotated back.
    """
    # q: [T, Hq, D] -> out: [T, Hq, D]
    rotated = isinstance(k_cache, QuantizedKVCache) and k_cache.rotation is not None
    qdtype = q.dtype
    out = torch.empty(q.shape, dtype=torch.float32 if rotated else q.dtype, device=q.device)
    hq, hkv = q.shape[1], k_cache.shape[2]
    start = 0
    for b, (q_len, kv_len) in enumerate(zip(meta.q_lens_cpu, meta.kv_lens_cpu)):
        qb = q[start : start + q_len].transpose(0, 1).float()  # [Hq, q_len, D]
        kb = gather_kv(k_cache, meta.block_tables[b], kv_len).transpose(0, 1).float()  # [Hkv, kv_len, D]
        vb = gather_kv(v_cache, meta.block_tables[b], kv_len).transpose(0, 1).float()
        if hq != hkv:
            kb = kb.repeat_interleave(hq // hkv, dim=0)  # [Hq, kv_len, D]
            vb = vb.repeat_interleave(hq // hkv, dim=0)
        scores = torch.matmul(qb, kb.transpose(1, 2)) * scale  # [Hq, q_len, kv_len]
        q_pos = torch.arange(kv_len - q_len, kv_len, device=q.device).unsqueeze(1)
        k_pos = torch.arange(kv_len, device=q.device).unsqueeze(0)
        scores = scores.masked_fill(k_pos > q_pos, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[start : start + q_len] = torch.matmul(probs, vb).transpose(0, 1).to(out.dtype)
        start += q_len
    if rotated:
        return (out @ k_cache.rotation).to(qdtype)
    return out
