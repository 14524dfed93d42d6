import pytest
import torch

from lmdeploy_sdk.engine.memory import (
    CPU_CACHE_CAP_BYTES,
    block_bytes,
    num_cache_blocks,
    resolve_dtype,
)

CPU = torch.device("cpu")


def test_int_is_a_block_count():
    assert num_cache_blocks(17, 1000, CPU, 10**9) == 17


def test_cpu_fraction_is_capped_by_use_and_by_the_ceiling():
    per = block_bytes(30, 3, 64, 64, torch.float32)
    assert per == 2 * 30 * 64 * 3 * 64 * 4
    assert num_cache_blocks(0.8, per, CPU, 10) == 10
    assert num_cache_blocks(0.8, per, CPU, 10**9) <= CPU_CACHE_CAP_BYTES // per


def test_dtype_auto_is_float32_on_cpu_and_explicit_wins():
    assert resolve_dtype("auto", torch.bfloat16, CPU) == torch.float32
    assert resolve_dtype("bfloat16", None, CPU) == torch.bfloat16


def test_no_room_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no room for the KV cache"):
        num_cache_blocks(1e-12, 10**12, CPU, 10)


@pytest.mark.parametrize("bits, at_least", [(8, 1.9), (4, 3.5)])
def test_a_quantized_kv_cache_gets_more_blocks_from_the_same_memory(bits, at_least, monkeypatch):
    # Llama-3-8B's cache: 32 layers, 8 kv heads of 128, blocks of 64 tokens; 16-bit vs int8/int4
    monkeypatch.setattr("lmdeploy_sdk.engine.memory.free_memory_bytes", lambda device: 2**30)
    shape = (32, 8, 128, 64)
    bf16 = num_cache_blocks(0.9, block_bytes(*shape, torch.bfloat16), CPU, 10**9)
    quant = num_cache_blocks(0.9, block_bytes(*shape, torch.bfloat16, kv_bits=bits), CPU, 10**9)
    assert quant / bf16 >= at_least
    # the bytes: per (token, kv head) 128 values of 8 or 4 bits and a float16 (scale, zero)
    assert block_bytes(*shape, torch.bfloat16, kv_bits=bits) == 2 * 32 * 64 * 8 * (128 * bits // 8 + 4)


def test_the_cache_line_names_blocks_tokens_and_element_type():
    from lmdeploy_sdk.engine.memory import describe_cache

    assert describe_cache(100, 64, 2**20, 8, torch.bfloat16) == (
        "KV cache: 100 blocks of 64 tokens (6400 tokens, int8, 0.10 GiB)")
    assert "bfloat16" in describe_cache(1, 64, 2**20, 0, torch.bfloat16)
