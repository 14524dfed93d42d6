"""LMDeploy's CLI habits carry over (issue 18): `--backend turbomind` and `--instance_num 64`
are accepted with a one-line note (they were fatal, and their values were taken as the
model), `convert MODEL_NAME PATH` writes ./workspace, and `chat turbomind ./workspace`
chats with that directory. Run through the real console script."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lmdeploy_sdk.cli.main import build_parser

SCRIPT = Path(sys.executable).parent / "lmdeploy-sdk"
needs_script = pytest.mark.skipif(not SCRIPT.exists(), reason="the lmdeploy-sdk console script is not installed")


def _run(argv: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *argv], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=600)


def test_backend_and_instance_num_parse_without_taking_the_model():
    a = build_parser().parse_args(["serve", "api_server", "./workspace", "--backend", "turbomind", "--instance_num", "64"])
    assert a.model == "./workspace" and a.backend == "turbomind" and a.instance_num == 64


def test_convert_defaults_to_workspace():
    a = build_parser().parse_args(["convert", "internlm-chat-7b", "/path/to/model"])
    assert (a.src, a.model_path, a.dst_path) == ("internlm-chat-7b", "/path/to/model", "./workspace")


@needs_script
def test_convert_name_path_then_chat_turbomind_workspace(tiny_llama, tmp_path):
    out = _run(["convert", "internlm-chat-7b", str(tiny_llama)], tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "workspace" / "config.json").exists()
    assert "note: model name 'internlm-chat-7b' is not needed" in out.stderr
    chat = _run(["chat", "turbomind", "./workspace", "--backend", "turbomind", "--instance_num", "64",
                 "--max-new-tokens", "4"], tmp_path, stdin="hello\nexit\n")
    assert chat.returncode == 0, chat.stderr
    notes = [line for line in chat.stderr.splitlines() if "note:" in line]
    assert len(notes) == 3, chat.stderr  # the backend word, --backend and --instance-num, one line each
    assert "Traceback" not in chat.stderr and ">>> " in chat.stdout
