"""Acceptance (the AWQ tutorial, on CPU with the embedded model): `lite auto_awq` writes
./work_dir, pipeline('./work_dir') answers, `serve api_server ./work_dir --model-format awq`
serves it under the path exactly as typed (and its short name), and the `openai` client chats."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading

import openai
import pytest

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline

WORK_DIR = "./work_dir"  # relative, as a user types it


def _cli() -> list[str]:
    script = shutil.which("lmdeploy-sdk")
    return [script] if script else [sys.executable, "-m", "lmdeploy_sdk"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_started(proc: subprocess.Popen) -> None:
    """Until uvicorn reports startup complete (the engine is built in the lifespan, before that),
    then keep draining the server's output so its pipe never fills."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Application startup complete" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return
    raise AssertionError(f"the server exited with {proc.wait()}:\n{''.join(lines[-40:])}")


@pytest.mark.slow
def test_quantize_then_pipeline_then_serve(smollm2_dir, tmp_path, monkeypatch):
    done = subprocess.run([*_cli(), "lite", "auto_awq", "smollm2-135m-instruct", "--work-dir", WORK_DIR,
                           "--calib-samples", "4", "--calib-seqlen", "128", "--w-group-size", "64"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((tmp_path / "work_dir" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "awq" and config["quantization_config"]["group_size"] == 64

    monkeypatch.chdir(tmp_path)
    with pipeline(WORK_DIR, backend_config=TurbomindEngineConfig(device="cpu", cache_max_entry_count=64)) as pipe:
        response = pipe("What is the capital of France?", gen_config=GenerationConfig(max_new_tokens=16))
        assert response.finish_reason in ("stop", "length") and response.text.strip()

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*_cli(), "serve", "api_server", WORK_DIR, "--model-format", "awq", "--server-port",
                             str(port), "--session-len", "2048", "--cache-max-entry-count", "64",
                             "--log-level", "info"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_started(proc)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
        assert [m.id for m in client.models.list().data] == [WORK_DIR]
        for name in (WORK_DIR, "work_dir"):  # as typed, and its short name
            reply = client.chat.completions.create(model=name, max_tokens=16, temperature=0,
                                                   messages=[{"role": "user", "content": "Say hello."}])
            assert reply.choices[0].message.content.strip()
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=4,
                                           messages=[{"role": "user", "content": "hi"}])
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
