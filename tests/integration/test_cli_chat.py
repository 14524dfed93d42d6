"""`lmdeploy-sdk chat` as a user runs it: a streaming REPL on one stateful session."""
from __future__ import annotations

import subprocess
import sys


def test_chat_repl_multi_turn_end_and_exit(tiny_llama):
    script = "hello\nsecond turn\nend\nfresh start\nexit\n"
    out = subprocess.run(
        [sys.executable, "-m", "lmdeploy_sdk", "chat", str(tiny_llama), "--device", "cpu",
         "--max-new-tokens", "5", "--cache-max-entry-count", "64", "--cache-block-seq-len", "8"],
        input=script, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(">>> ") == 5
    assert "(new conversation)" in out.stdout
    assert "[error]" not in out.stdout
