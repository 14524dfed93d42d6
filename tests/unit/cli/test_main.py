from __future__ import annotations

import subprocess
import sys

import pytest

from lmdeploy_sdk.cli.main import build_parser, main
from lmdeploy_sdk.version import __version__


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "lmdeploy_sdk", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_underscore_and_dash_spellings_both_parse():
    p = build_parser()
    a = p.parse_args(["chat", "m", "--session-len", "128", "--max_batch_size", "4", "--cache_max_entry_count=0.5"])
    assert a.session_len == 128 and a.max_batch_size == 4 and a.cache_max_entry_count == 0.5


def test_check_env_reports_versions(capsys):
    assert main(["check_env"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "cuda available" in out and "native kernels" in out
