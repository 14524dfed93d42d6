"""Acceptance 2 (unit half): langchain-tests' ChatModelUnitTests for LMDeployChat, plus the
request building that needs no engine (construction never loads the model)."""
from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel

from lmdeploy_sdk import TurbomindEngineConfig
from lmdeploy_sdk.integrations.langchain import LMDeploy, LMDeployChat
from lmdeploy_sdk.integrations.langchain.connection import api_base


class TestLMDeployChatUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[LMDeployChat]:
        return LMDeployChat

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "smollm2-135m-instruct"}


class TestLMDeployChatRemoteUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[LMDeployChat]:
        return LMDeployChat

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"base_url": "http://127.0.0.1:9/v1", "model": "served-name"}


def test_construction_is_lazy():
    chat = LMDeployChat(model="/no/such/model/dir")
    assert chat._connection is None  # nothing loaded until the first call


def test_request_params_layering():
    chat = LMDeployChat(temperature=0.5, max_tokens=8, stop=["x"], model_kwargs={"top_k": 3, "seed": 1})
    params = chat.request_params(None, {"temperature": 0, "session_id": 7, "stream": True})
    assert params == {"temperature": 0, "max_tokens": 8, "top_k": 3, "seed": 1, "stop": ["x"], "session_id": 7}
    assert chat.request_params(["y"], {})["stop"] == ["y"]


def test_engine_config_from_dict():
    chat = LMDeployChat(backend_config={"session_len": 512})
    assert chat.backend_config == TurbomindEngineConfig(session_len=512)
    with pytest.raises(TypeError, match="no_such_field"):
        LMDeployChat(backend_config={"no_such_field": 1})


@pytest.mark.parametrize("kwargs", [
    {"base_url": "http://h:1", "backend_config": TurbomindEngineConfig()},
    {"base_url": "http://h:1", "chat_template_config": {"model_name": "x"}},
])
def test_remote_rejects_in_process_settings(kwargs):
    with pytest.raises(ValueError, match="only apply in-process"):
        LMDeployChat(**kwargs)


@pytest.mark.parametrize("url, base", [
    ("http://127.0.0.1:23333", "http://127.0.0.1:23333/v1"),
    ("http://127.0.0.1:23333/", "http://127.0.0.1:23333/v1"),
    ("http://127.0.0.1:23333/v1", "http://127.0.0.1:23333/v1"),
    ("https://host/prefix/v1/", "https://host/prefix/v1"),
])
def test_api_base(url, base):
    assert api_base(url) == base


def test_api_base_rejects_non_http():
    with pytest.raises(ValueError, match="ftp://x"):
        api_base("ftp://x")


class Answer(BaseModel):
    """An answer."""

    value: int


@pytest.mark.parametrize("choice, expected", [
    ("any", "required"), (True, "required"), ("auto", "auto"), ("none", "none"),
    ("Answer", {"type": "function", "function": {"name": "Answer"}}),
])
def test_bind_tools_maps_tool_choice(choice, expected):
    bound = LMDeployChat().bind_tools([Answer], tool_choice=choice)
    assert bound.kwargs["tool_choice"] == expected
    assert bound.kwargs["tools"][0]["function"]["name"] == "Answer"


def test_bind_tools_rejects_unknown_tool_name():
    with pytest.raises(ValueError, match="'Other'"):
        LMDeployChat().bind_tools([Answer], tool_choice="Other")


def test_structured_output_binds_the_request():
    chat = LMDeployChat()
    by_tool = chat.with_structured_output(Answer)
    assert by_tool.first.kwargs["tool_choice"] == {"type": "function", "function": {"name": "Answer"}}
    by_json = chat.with_structured_output(Answer, method="json_schema", strict=True)
    fmt = by_json.first.kwargs["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Answer"
    assert fmt["json_schema"]["strict"] is True
    with pytest.raises(ValueError, match="'xml'"):
        chat.with_structured_output(Answer, method="xml")


def test_llm_ls_params():
    params = LMDeploy(model="m", temperature=0.1)._get_ls_params(model="other")
    assert params["ls_provider"] == "lmdeploy" and params["ls_model_name"] == "other"
    assert params["ls_model_type"] == "llm"
