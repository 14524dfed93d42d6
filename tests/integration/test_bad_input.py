"""Acceptance: bad input gets a clear error, never a hang or a crash of other requests."""
from __future__ import annotations

import pytest

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline
from lmdeploy_sdk.errors import ErrorCode, ModelLoadError


def test_prompt_longer_than_session_len_is_an_error_response(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama, session_len=64)
    long = "word " * 100
    out = pipe(["short prompt", long, "another short one"], max_new_tokens=4)
    assert out[1].finish_reason == "error" and out[1].error_code == ErrorCode.INPUT_TOO_LONG
    assert "session_len=64" in out[1].error_message
    assert out[0].finish_reason == "length" and out[2].finish_reason == "length"


def test_empty_prompt_is_an_error_response_others_unaffected(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    out = pipe(["", "fine"], max_new_tokens=3, do_preprocess=False)
    assert out[0].finish_reason == "error" and "empty" in out[0].error_message
    assert out[1].finish_reason == "length"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(max_new_tokens=-1), "max_new_tokens=-1"),
        (dict(top_p=2), "top_p=2"),
        (dict(temperature=3.0), "temperature=3.0"),
        (dict(n=0), "n=0"),
        (dict(top_k=-5), "top_k=-5"),
    ],
)
def test_invalid_generation_config_names_the_field(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        GenerationConfig(**kwargs)


def test_unknown_config_field_is_named():
    with pytest.raises(TypeError, match="maxbatch"):
        TurbomindEngineConfig(maxbatch=3)
    with pytest.raises(TypeError, match="temprature"):
        GenerationConfig(temprature=0.5)


def test_unknown_kwarg_to_infer_is_named(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    with pytest.raises(TypeError, match="max_tokens"):
        pipe("hi", max_tokens=3)


def test_gen_config_list_of_wrong_length(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    with pytest.raises(ValueError, match="2 gen_configs for 3 prompts"):
        pipe(["a", "b", "c"], gen_config=[GenerationConfig(), GenerationConfig()])


def test_missing_model_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no/such/model"):
        pipeline(str(tmp_path / "no/such/model"))


def test_directory_without_config_json(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        pipeline(str(tmp_path))


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}')
    with pytest.raises(ValueError, match="GPT2LMHeadModel.*LlamaForCausalLM"):
        pipeline(str(tmp_path))


def test_session_len_beyond_the_model_positions(tiny_llama):
    with pytest.raises(ValueError, match="session_len=100000 exceeds the 4096 positions"):
        pipeline(str(tiny_llama), backend_config=TurbomindEngineConfig(device="cpu", session_len=100000))


def test_unsupported_engine_features_say_so(tiny_llama):
    with pytest.raises(NotImplementedError, match="tp=2"):
        pipeline(str(tiny_llama), backend_config=TurbomindEngineConfig(device="cpu", tp=2))
