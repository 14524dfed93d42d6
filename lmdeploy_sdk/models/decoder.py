"""The pre-norm decoder shared by Llama, Qwen2, Qwen3, Mistral and InternLM2.

Architectures differ only in config flags (biases, q/k norm) and checkpoint
layout; the compute is this one module tree. Parameter names follow HF Llama
(`model.layers.N.self_attn...`) with q/k/v fused into `qkv_proj` [q | k | v] and
gate/up into `gate_up_proj` [gate | up]. Norms, rope, SiLU-and-mul, the KV write
and attention go through `lmdeploy_sdk.ops` so native kernels slot in there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmdeploy_sdk import ops
from lmdeploy_sdk.models.checkpoint import CheckpointLayout, WeightTarget
from lmdeploy_sdk.models.config import ModelConfig
from lmdeploy_sdk.models.rope import table_length
from lmdeploy_sdk.ops import AttentionMetadata

# (k_cache, v_cache), each [num_blocks, block_size, Hkv, D] (or int8/int4: ops.reference.KVCache)
KVCache = tuple[ops.reference.KVCache, ops.reference.KVCache]
# Input rows whose embeddings are given rather than looked up: (rows [R] int64, values [R, hidden])
Embeds = tuple[torch.Tensor, torch.Tensor]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dtype=dtype))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(x, self.weight, self.eps)

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(x + residual), x + residual)."""
        return ops.add_rms_norm(x, residual, self.weight, self.eps)

    def into(
        self, proj: nn.Linear, x: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(proj(norm(x + residual)), x + residual), one kernel at small batches; residual
        None (the first layer) stands for zeros, and x itself is returned as the sum."""
        return ops.rms_norm_linear(x, residual, self.weight, self.eps, proj.weight, proj.bias)

    def into_gated(
        self, gate_up_proj: nn.Linear, x: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(silu(gate) * up of gate_up_proj(norm(x + residual)), x + residual), as `into`."""
        weight, bias = gate_up_proj.weight, gate_up_proj.bias
        return ops.rms_norm_gated_linear(x, residual, self.weight, self.eps, weight, bias)


class Linear(nn.Linear):
    """nn.Linear through ops.linear, so small decode batches run our GEMV kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.linear(x, self.weight, self.bias)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q_size, kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = Linear(cfg.hidden_size, q_size + 2 * kv_size, bias=cfg.attention_bias, dtype=dtype)
        self.o_proj = Linear(q_size, cfg.hidden_size, bias=cfg.attention_out_bias, dtype=dtype)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, dtype) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, dtype) if cfg.qk_norm else None
        self.scale = cfg.head_dim**-0.5

    def forward(
        self,
        qkv: torch.Tensor,
        positions: torch.Tensor,
        kv_cache: KVCache,
        meta: AttentionMetadata,
        cos_sin: torch.Tensor,
    ) -> torch.Tensor:
        """Attention from the qkv projection (the layer fuses it with the norm before it)."""
        # qkv: [T, (Hq + 2 Hkv) * D]; positions: [T]; cos_sin: [P, D] -> [T, hidden]
        q, k, v = ops.qkv_heads(qkv, self.num_heads, self.num_kv_heads, self.head_dim)  # [T, H, D]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        k_cache, v_cache = kv_cache
        q = ops.rope_store_kv(q, k, v, positions, cos_sin, k_cache, v_cache, meta.slot_mapping)
        return self.attend(q, kv_cache, meta)

    def attend(self, q: torch.Tensor, kv_cache: KVCache, meta: AttentionMetadata) -> torch.Tensor:
        """Attention of rotated q over the cache (which holds this step's k, v), then o_proj."""
        # q: [T, Hq, D] -> [T, hidden]
        out = ops.paged_attention(q, kv_cache[0], kv_cache[1], meta, self.scale)  # [T, Hq, D]
        return self.o_proj(out.reshape(q.shape[0], self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype) -> None:
        super().__init__()
        i = cfg.intermediate_size
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * i, bias=cfg.mlp_bias, dtype=dtype)
        self.down_proj = Linear(i, cfg.hidden_size, bias=cfg.mlp_bias, dtype=dtype)

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        """The MLP after its activation (the layer fuses norm, gate/up and SiLU-and-mul)."""
        # act = silu(gate) * up: [T, I] -> [T, hidden]
        return self.down_proj(act)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.self_attn = Attention(cfg, dtype)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.mlp = MLP(cfg, dtype)

    def forward(
        self,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        positions: torch.Tensor,
        kv_cache: KVCache,
        meta: AttentionMetadata,
        cos_sin: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(this layer's output, the residual stream before it); their sum is the HF hidden state."""
        # hidden, residual: [T, hidden]
        attn = self.self_attn
        if attn.q_norm is None:  # norm, qkv, rope and the cache write: one kernel at small batches
            norm = self.input_layernorm
            q, residual = ops.rms_norm_rope_store_kv(
                hidden, residual, norm.weight, norm.eps, attn.qkv_proj.weight, attn.qkv_proj.bias,
                attn.num_heads, attn.num_kv_heads, positions, cos_sin, *kv_cache, meta.slot_mapping,
            )
            x = attn.attend(q, kv_cache, meta)
        else:  # q/k norms sit between the projection and rope
            qkv, residual = self.input_layernorm.into(attn.qkv_proj, hidden, residual)
            x = attn(qkv, positions, kv_cache, meta, cos_sin)
        act, residual = self.post_attention_layernorm.into_gated(self.mlp.gate_up_proj, x, residual)
        return self.mlp(act), residual


class DecoderModel(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, max_positions: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList(DecoderLayer(cfg, dtype) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        # [P, D] float32: cos | sin per position; filled by the builder (see rope.rope_cos_sin).
        self.register_buffer("rope_cos_sin", torch.empty(max_positions, cfg.head_dim), persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[KVCache],
        meta: AttentionMetadata,
        embeds: Embeds | None = None,
    ) -> torch.Tensor:
        assert len(kv_caches) == len(self.layers), "one (k_cache, v_cache) pair per layer"
        hidden = F.embedding(input_ids, self.embed_tokens.weight)  # [T, hidden]
        if embeds is not None:  # e.g. image features in place of the image tokens
            rows, values = embeds
            hidden = hidden.index_copy(0, rows, values.to(hidden.dtype))
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches):
            hidden, residual = layer(hidden, residual, positions, kv_cache, meta, self.rope_cos_sin)
        hidden, _ = self.norm.add_forward(hidden, residual)
        return hidden


class CausalLM(nn.Module):
    """A decoder-only LM over a paged KV cache: flat tokens in, final hidden states out."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype = torch.float32, rope_scaling_factor: float = 0.0):
        super().__init__()
        self.config = config
        self.model = DecoderModel(config, dtype, table_length(config, rope_scaling_factor))
        self.lm_head = (
            None if config.tie_word_embeddings
            else Linear(config.hidden_size, config.vocab_size, bias=False, dtype=dtype)
        )

    @property
    def max_positions(self) -> int:
        """Positions the rope table covers; a token at a later position cannot be run."""
        return self.model.rope_cos_sin.shape[0]

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[KVCache],
        meta: AttentionMetadata,
        embeds: Embeds | None = None,
    ) -> torch.Tensor:
        # input_ids, positions: [T] int64; embeds: (rows [R] int64, values [R, hidden]) -> [T, hidden]
        return self.model(input_ids, positions, kv_caches, meta, embeds)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits in the model's dtype: greedy decoding takes their argmax as they are (a
        float32 copy of a large batch's logits costs more than the argmax); callers that
        need float32 (sampling, scoring) convert."""
        # hidden: [N, hidden] -> [N, vocab]
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return ops.linear(hidden, weight)


def hf_layout(cfg: ModelConfig) -> dict[str, WeightTarget]:
    """Checkpoint names of the HF Llama family (Llama, Qwen2, Qwen3, Mistral) -> our parameters."""
    q, kv, i = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.intermediate_size
    targets = {
        "model.embed_tokens.weight": WeightTarget("model.embed_tokens.weight"),
        "model.norm.weight": WeightTarget("model.norm.weight"),
    }
    if not cfg.tie_word_embeddings:
        targets["lm_head.weight"] = WeightTarget("lm_head.weight")
    attn_kinds = ("weight", "bias") if cfg.attention_bias else ("weight",)
    mlp_kinds = ("weight", "bias") if cfg.mlp_bias else ("weight",)
    for n in range(cfg.num_layers):
        p = f"model.layers.{n}."
        attn, mlp = p + "self_attn.", p + "mlp."
        for kind in attn_kinds:
            qkv = f"{attn}qkv_proj.{kind}"
            targets[f"{attn}q_proj.{kind}"] = WeightTarget(qkv, (0, q))
            targets[f"{attn}k_proj.{kind}"] = WeightTarget(qkv, (q, q + kv))
            targets[f"{attn}v_proj.{kind}"] = WeightTarget(qkv, (q + kv, q + 2 * kv))
        for kind in mlp_kinds:
            gate_up = f"{mlp}gate_up_proj.{kind}"
            targets[f"{mlp}gate_proj.{kind}"] = WeightTarget(gate_up, (0, i))
            targets[f"{mlp}up_proj.{kind}"] = WeightTarget(gate_up, (i, 2 * i))
        same_names = [f"{attn}o_proj.weight", f"{mlp}down_proj.weight",
                      p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
        if cfg.attention_out_bias:
            same_names.append(f"{attn}o_proj.bias")
        if cfg.mlp_bias:
            same_names.append(f"{mlp}down_proj.bias")
        if cfg.qk_norm:
            same_names += [f"{attn}q_norm.weight", f"{attn}k_norm.weight"]
        targets.update((name, WeightTarget(name)) for name in same_names)
    return targets


def hf_checkpoint_layout(cfg: ModelConfig) -> CheckpointLayout:
    ignored = frozenset({"lm_head.weight"}) if cfg.tie_word_embeddings else frozenset()
    return CheckpointLayout(hf_layout(cfg), ignored)
