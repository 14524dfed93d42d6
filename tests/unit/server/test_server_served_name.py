"""The served model name (API.md): --model-name, else the model path exactly as typed; the
path's short name is accepted too."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from lmdeploy_sdk.server.errors import APIError
from lmdeploy_sdk.server.routes.openai_api import check_model


def _ctx(served: str):
    return SimpleNamespace(engine=SimpleNamespace(model_name=served))


@pytest.mark.parametrize("served, accepted", [
    ("./work_dir", ["./work_dir", "work_dir"]),
    ("/models/qwen-awq/", ["/models/qwen-awq/", "qwen-awq"]),
    ("smollm2-135m-instruct", ["smollm2-135m-instruct"]),
    ("tiny", ["tiny"]),
])
def test_path_as_typed_and_its_short_name(served, accepted):
    for name in accepted:
        check_model(_ctx(served), name)


@pytest.mark.parametrize("served, refused", [("./work_dir", "./work"), ("./work_dir", ""), (".", ""),
                                             ("tiny", "gpt-4o"), ("./work_dir", "other/work_dir")])
def test_other_names_are_404(served, refused):
    with pytest.raises(APIError) as err:
        check_model(_ctx(served), refused)
    assert (err.value.status, err.value.code, err.value.param) == (404, "model_not_found", "model")


def test_the_shim_and_the_server_share_one_rule():
    """integrations/openai's in-process API checks `model` with the same function."""
    from lmdeploy_sdk.integrations.openai import in_process_api
    from lmdeploy_sdk.server.openai_bodies import serves_model

    assert in_process_api.serves_model is serves_model
    assert serves_model("./work_dir", "work_dir") and serves_model("./work_dir", "./work_dir")
    assert not serves_model("./work_dir", "other")
