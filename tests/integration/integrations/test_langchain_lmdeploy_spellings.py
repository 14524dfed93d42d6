"""`LMDeploy` / `LMDeployChat` as LMDeploy's docs write them (issue 18): `model_name`,
`endpoint` and `api_url` mean `model` and `base_url` (they were silently ignored and the
local default model ran), a misspelt field is an error, and get_num_tokens counts with the
model's own tokenizer (it fell back to GPT-2 from the hub, 0 offline)."""
from __future__ import annotations

import pydantic
import pytest

from lmdeploy_sdk.integrations.langchain import LMDeploy, LMDeployChat

CLASSES = [LMDeploy, LMDeployChat]
TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("spelling", ["endpoint", "api_url"])
def test_lmdeploy_spellings_reach_the_server(cls, spelling, tiny_server, tiny_pipe):
    model = cls(model_name="tiny-llama", **{spelling: tiny_server}, temperature=0, max_tokens=4)
    try:
        assert (model.model, model.base_url) == ("tiny-llama", tiny_server)
        out = model.invoke("hello")
        text = out.content if cls is LMDeployChat else out
        assert isinstance(text, str) and model.connection().client.base_url.host == "127.0.0.1"
    finally:
        model.close()


@pytest.mark.parametrize("cls", CLASSES)
def test_misspelt_field_is_an_error(cls):
    with pytest.raises(pydantic.ValidationError, match="tempreature"):
        cls(tempreature=0.7)


@pytest.mark.parametrize("cls", CLASSES)
def test_a_spelling_that_disagrees_is_an_error(cls):
    with pytest.raises(pydantic.ValidationError, match="model_name='a' and model='b' disagree"):
        cls(model_name="a", model="b")


@pytest.mark.parametrize("cls", CLASSES)
def test_num_tokens_uses_the_models_tokenizer(cls, tiny_pipe, tiny_server):
    expected = len(tiny_pipe.tokenizer.encode(TEXT, add_special_tokens=False))
    local = cls(pipeline=tiny_pipe)
    remote = cls(base_url=tiny_server)
    try:
        assert local.get_num_tokens(TEXT) == expected
        assert remote.get_num_tokens(TEXT) == expected
    finally:
        local.close()
        remote.close()
