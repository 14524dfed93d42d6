"""TurbomindEngineConfig's KV cache fields: quant_policy and its other name kv_cache_quant_bit."""
from __future__ import annotations

import pytest

from lmdeploy_sdk import TurbomindEngineConfig


@pytest.mark.parametrize("bits", [0, 4, 8])
def test_kv_cache_quant_bit_is_another_name_for_quant_policy(bits):
    assert TurbomindEngineConfig(kv_cache_quant_bit=bits).quant_policy == bits
    assert TurbomindEngineConfig(quant_policy=bits, kv_cache_quant_bit=bits).quant_policy == bits
    assert TurbomindEngineConfig(quant_policy=bits).quant_policy == bits


def test_a_tutorial_that_means_4_bit_weights_is_not_misread():
    # quant_policy=4 with kv_cache_quant_bit=8: two answers to one question
    with pytest.raises(ValueError) as err:
        TurbomindEngineConfig(quant_policy=4, kv_cache_quant_bit=8)
    msg = str(err.value)
    assert "quant_policy=4" in msg and "kv_cache_quant_bit=8" in msg
    assert "KV cache" in msg and "model_format='awq'" in msg


@pytest.mark.parametrize("field, value", [("quant_policy", 2), ("kv_cache_quant_bit", 16)])
def test_bad_bits_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"{field}={value}"):
        TurbomindEngineConfig(**{field: value})
