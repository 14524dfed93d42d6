"""A bad option or an unsupported feature is one line on stderr and exit code 2 from the
real console script, and `serve api_server` fails before it says it is serving (issue 18:
these printed "serving on http://..." and then a 55-line ExceptionGroup)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "lmdeploy-sdk"  # this interpreter's console script
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="the lmdeploy-sdk console script is not installed")

CASES = [
    (["serve", "api_server", "--tp", "2"], "tp=2"),
    (["serve", "api_server", "--session-len", "100000"], "session_len=100000"),
    (["chat", "--session-len", "100000"], "session_len=100000"),
    (["chat", "--max-batch-size", "0"], "max_batch_size=0"),
    (["serve", "api_server", "/no/such/model/dir"], "/no/such/model/dir"),
    (["serve", "gradio", "--tp", "2"], "tp=2"),
    (["serve", "api_server", "--api-keys-file", "/no/such/keys.txt"], "/no/such/keys.txt"),
    (["serve", "api_server", "--max-sessions", "0"], "max_sessions=0"),
    (["serve", "gradio", "--session-ttl", "0"], "session_ttl_s=0"),
    # serve ray: before Ray starts
    (["serve", "ray", "--num-replicas", "0"], "num_replicas=0"),
    (["serve", "ray", "--min-replicas", "1"], "min_replicas and max_replicas"),
    (["serve", "ray", "/no/such/model/dir"], "/no/such/model/dir"),
    (["serve", "ray", "--tp", "2"], "tp=2"),
    (["serve", "ray", "--num-cpus-per-replica", "100000"], "--num-cpus-per-replica"),  # after Ray starts
]


@pytest.mark.parametrize("argv, named", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_option_is_one_line_and_exit_2(argv, named):
    out = subprocess.run([SCRIPT, *argv, "--server-port", "0"] if argv[0] == "serve" else [SCRIPT, *argv],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert errors == lines[-1:], out.stderr[-3000:]  # one error line, the last (first-use conversion logs above it)
    assert errors[0].startswith(f"lmdeploy-sdk {argv[0]}: error: ") and named in errors[0], errors[0]
    assert "Traceback" not in out.stderr and "serving on" not in out.stderr + out.stdout
