"""The int8/int4 KV cache on the GPU: the quantizing cache writes (kv_quant.cu), attention over
the quantized cache as the ops run it (rotation, decode kernel, prefill over a dequantized copy),
and whole engines with quant_policy 8/4 against the reference ops."""
from __future__ import annotations

import pytest
import torch
from engine_runs import assert_scores_agree, run, scores
from native_attention_cases import make_paged_batch, poison_allocator, recorded_launches, relative_error

from lmdeploy_sdk import ops
from lmdeploy_sdk.native import kv_quant
from lmdeploy_sdk.ops import reference
from lmdeploy_sdk.quant.kv_cache import QuantizedKVCache, dequantize

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16]
BITS = [8, 4]


def _cache_pair(num_blocks, block_size, hkv, d, bits):
    return tuple(QuantizedKVCache.zeros(num_blocks, block_size, hkv, d, bits, "cuda") for _ in range(2))


def _rows(cache: QuantizedKVCache, slots: torch.Tensor) -> torch.Tensor:
    """Dequantized (still rotated) rows at the slots: [n, Hkv, D] float32."""
    nb, bs, h, dq = cache.values.shape
    return dequantize(cache.values.view(nb * bs, h, dq)[slots], cache.params.view(nb * bs, h, 2)[slots], cache.bits)


def _assert_same_rows(native: QuantizedKVCache, ref: QuantizedKVCache, slots: torch.Tensor) -> None:
    """Within one quantization step: the Hadamard sums round in another order than the
    reference's matmul, so a code on a rounding boundary may land one step away."""
    got, want = _rows(native, slots), _rows(ref, slots)
    step = ref.params.view(-1, ref.params.shape[2], 2)[slots][..., :1].float()
    assert ((got - want).abs() <= 1.01 * step + 1e-3).all()
    codes_equal = (native.values.view(-1)[:] == ref.values.view(-1)[:]).float().mean().item()
    assert codes_equal > 0.99, codes_equal


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128])
def test_store_kv_quantizes_like_the_reference(bits, dtype, head_dim):
    torch.manual_seed(0)
    t, hkv, hq, bs = 37, 4, 8, 16
    qkv = torch.randn(t, (hq + 2 * hkv) * head_dim, device="cuda", dtype=dtype) * 3
    q, k, v = reference.qkv_heads(qkv, hq, hkv, head_dim)  # strided views of one projection
    slots = torch.randperm(8 * bs, device="cuda")[:t]
    slots[5] = -1  # a padding row: written nowhere
    native, ref = _cache_pair(8, bs, hkv, head_dim, bits), _cache_pair(8, bs, hkv, head_dim, bits)
    with recorded_launches() as launched:
        ops.store_kv(k, v, *native, slots)
    assert launched == [f"rope_store_kv_q{bits}_{'f16' if dtype == torch.float16 else 'bf16'}_d{head_dim}"]
    reference.store_kv(k, v, *ref, slots)
    for a, b in zip(native, ref):
        _assert_same_rows(a, b, slots[slots >= 0])


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128])
def test_rope_store_kv_quantized(bits, dtype, head_dim):
    torch.manual_seed(1)
    t, hkv, hq, bs = 21, 2, 16, 64
    qkv = torch.randn(t, (hq + 2 * hkv) * head_dim, device="cuda", dtype=dtype)
    q, k, v = reference.qkv_heads(qkv, hq, hkv, head_dim)
    positions = torch.randint(0, 4000, (t,), device="cuda")
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device="cuda").float() / head_dim))
    angles = torch.arange(4096, device="cuda").float()[:, None] * inv[None]
    cos_sin = torch.cat((angles.cos(), angles.sin()), dim=-1)  # [4096, D]
    slots = torch.randperm(4 * bs, device="cuda")[:t]
    native, ref = _cache_pair(4, bs, hkv, head_dim, bits), _cache_pair(4, bs, hkv, head_dim, bits)
    q_native = ops.rope_store_kv(q, k, v, positions, cos_sin, *native, slots)
    q_ref = reference.rope_store_kv(q, k, v, positions, cos_sin, *ref, slots)
    # rope as the reference's arithmetic; then the cache's rotation, summed in another order
    torch.testing.assert_close(q_native, q_ref, rtol=1e-2 if dtype == torch.bfloat16 else 1e-3, atol=1e-3)
    for a, b in zip(native, ref):
        _assert_same_rows(a, b, slots)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dequantized_blocks_are_the_reference_rows(bits, dtype):
    cache = QuantizedKVCache.zeros(6, 16, 2, 128, bits, "cuda")
    cache.store(torch.randn(96, 2, 128, device="cuda"), torch.arange(96, device="cuda"))
    blocks = torch.tensor([4, 1, 1], dtype=torch.int32, device="cuda")
    out = kv_quant.dequantized_blocks(cache, blocks, dtype)  # [3, 16, 2, 128]
    want = dequantize(cache.values[blocks.long()], cache.params[blocks.long()], bits).to(dtype)
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def _quantized_batch(q_lens, kv_lens, heads, head_dim, block_size, dtype, bits, seed):
    """make_paged_batch's batch with its caches written into int8/int4 caches (same block tables)."""
    batch = make_paged_batch(q_lens, kv_lens, *heads, head_dim, block_size, dtype, seed=seed)
    nb = batch.k_cache.shape[0]
    kq, vq = _cache_pair(nb, block_size, heads[1], head_dim, bits)
    flat_k = batch.k_cache.view(nb * block_size, heads[1], head_dim)
    flat_v = batch.v_cache.view(nb * block_size, heads[1], head_dim)
    owned = torch.isfinite(flat_k.float()).all(-1).all(-1).nonzero().squeeze(1)  # slots a sequence holds
    reference.store_kv(flat_k[owned], flat_v[owned], kq, vq, owned)
    return batch, kq, vq


CASES = [
    # (q_lens, kv_lens): decode rows (ragged, at block boundaries, long), prefills (first and
    # on a cached prefix, i.e. q_len < kv_len), and a mixed batch
    pytest.param(([1] * 6, [1, 63, 64, 65, 200, 4097]), id="decode"),
    pytest.param(([1, 1], [32768, 9000]), id="decode-long"),
    pytest.param(([17, 64, 3], [17, 64, 130]), id="prefill-and-prefix"),
    pytest.param(([1, 1, 1, 40, 7], [5, 64, 300, 100, 7]), id="mixed"),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads, head_dim", [((8, 8), 128), ((32, 8), 128), ((16, 1), 64), ((12, 4), 64)])
def test_attention_over_the_quantized_cache(case, bits, dtype, heads, head_dim):
    q_lens, kv_lens = case
    batch, kq, vq = _quantized_batch(q_lens, kv_lens, heads, head_dim, 64, dtype, bits, seed=3)
    scale = head_dim**-0.5
    poison_allocator()
    with recorded_launches() as launched:
        out = ops.paged_attention(batch.q, kq, vq, batch.meta, scale)
    ref = reference.paged_attention(batch.q.float(), kq, vq, batch.meta, scale)
    if any(n == 1 for n in q_lens):
        assert any(name.startswith("paged_decode_q") for name in launched), launched
    if any(n > 1 for n in q_lens):
        assert any(name.startswith("dequant_kv_blocks") for name in launched), launched
    err = relative_error(out, ref)
    assert err < (3e-3 if dtype == torch.float16 else 1.5e-2), err


@pytest.mark.parametrize("policy", [8, 4])
def test_quantized_engine_native_agrees_with_reference_ops(policy, confident_model, monkeypatch):
    """An int8/int4 cache on our kernels (eager, and in decode graphs with prefix caching and
    chunked prefill) against the reference ops on the same GPU. Compared by probabilities, not
    greedy tokens: on this tiny model an int8 cache alone changes 73% of the unquantized
    cache's greedy tokens, so where a row's code lands after fp16 rounding flips many too."""
    path = confident_model("LlamaForCausalLM")
    ref = run(path, monkeypatch, native_on=False, graphs_on=False, use=scores, quant_policy=policy)
    assert_scores_agree(run(path, monkeypatch, native_on=True, graphs_on=False, use=scores, quant_policy=policy), ref)
    assert_scores_agree(run(path, monkeypatch, native_on=True, graphs_on=True, use=scores, quant_policy=policy,
                            enable_prefix_caching=True, max_prefill_token_num=48), ref)


@pytest.mark.parametrize("policy", [8, 4])
def test_int4_weights_with_a_quantized_kv_cache(policy, confident_model, monkeypatch, tmp_path):
    """The two quantizations combine: an AWQ checkpoint with an int8/int4 cache, on the int4
    kernels and in decode graphs, against the reference ops."""
    from quant_checkpoints import write_quantized

    path = write_quantized(confident_model("LlamaForCausalLM"), tmp_path / "q", "awq", 64)
    ref = run(path, monkeypatch, native_on=False, graphs_on=False, use=scores, quant_policy=policy)
    assert_scores_agree(run(path, monkeypatch, native_on=True, graphs_on=True, use=scores, quant_policy=policy), ref)
