"""Which 4-bit format config.json declares, against what the user asked for."""
from __future__ import annotations

import pytest

from lmdeploy_sdk.errors import ConfigError
from lmdeploy_sdk.quant.config import quant_config

AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": False}


def test_float_weights_have_no_quant_config():
    assert quant_config({}, None, "c") is None and quant_config({}, "hf", "c") is None
    with pytest.raises(ConfigError, match="model_format='awq' but this model has float weights.*lite auto_awq"):
        quant_config({}, "awq", "c")


def test_awq_and_gptq_detected_and_named():
    awq = quant_config({"quantization_config": AWQ}, None, "c")
    assert (awq.method, awq.group_size, awq.has_zero_points) == ("awq", 128, True)
    assert quant_config({"quantization_config": AWQ}, "awq", "c") == awq
    gptq = quant_config({"quantization_config": GPTQ}, "gptq", "c")
    assert (gptq.method, gptq.group_size, gptq.zero_offset) == ("gptq", 64, 1)
    v2 = quant_config({"quantization_config": {**GPTQ, "checkpoint_format": "gptq_v2"}}, None, "c")
    assert v2.zero_offset == 0


def test_our_rows_layout_is_4bit_for_model_format_awq():
    qc = {"quant_method": "lmdeploy_int4", "bits": 4, "group_size": 32, "modules_to_not_convert": ["layers.0.mlp"]}
    cfg = quant_config({"quantization_config": qc}, "awq", "c")
    assert not cfg.has_zero_points and cfg.modules_to_not_convert == ("layers.0.mlp",)
    assert not cfg.converts("model.layers.0.mlp.down_proj") and cfg.converts("model.layers.1.mlp.down_proj")


@pytest.mark.parametrize("qc, model_format, message", [
    (AWQ, "hf", "model_format='hf' but this model holds awq 4-bit weights; use model_format='awq'"),
    (AWQ, "gptq", "holds awq 4-bit weights"),
    ({**AWQ, "version": "gemv"}, None, "AWQ version 'gemv' is not supported"),
    ({**AWQ, "zero_point": False}, None, "zero_point: false"),
    ({**AWQ, "bits": 8}, None, "8-bit weights are not supported"),
    ({**GPTQ, "desc_act": True}, None, "act-order"),
    ({**GPTQ, "group_size": -1}, None, "group_size -1 is not supported"),
    ({"quant_method": "fp8"}, None, "quant_method 'fp8' is not supported"),
    ("awq", None, "quantization_config must be an object"),
])
def test_what_cannot_run_is_named(qc, model_format, message):
    with pytest.raises(ConfigError, match=message):
        quant_config({"quantization_config": qc}, model_format, "c")


def test_unknown_model_format():
    with pytest.raises(ValueError, match="model_format='int4' is invalid"):
        quant_config({}, "int4", "c")
