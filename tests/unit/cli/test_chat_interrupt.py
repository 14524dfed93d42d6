"""`lmdeploy-sdk chat`: Ctrl-C during an answer stops that answer and returns to the prompt
(the conversation goes on); Ctrl-C at the prompt quits cleanly (issue 18: the first
Ctrl-C quit the program)."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "lmdeploy-sdk"
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="the lmdeploy-sdk console script is not installed")


class _Output:
    """stdout of a process, read on a thread, so a test can wait for text to appear."""

    def __init__(self, stream) -> None:
        self.text = ""
        self._stream = stream
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for ch in iter(lambda: self._stream.read(1), ""):
            self.text += ch

    def wait_for(self, predicate, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while not predicate(self.text):
            assert time.monotonic() < end, f"timed out; output so far: {self.text[-2000:]!r}"
            time.sleep(0.05)


def test_ctrl_c_stops_the_answer_then_quits_at_the_prompt(tiny_llama):
    proc = subprocess.Popen([str(SCRIPT), "chat", str(tiny_llama), "--max-new-tokens", "4000"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = _Output(proc.stdout)
    try:
        for turn in ("hello", "and again"):
            out.wait_for(lambda t, n=turn: t.count(">>> ") == (1 if n == "hello" else 2))
            proc.stdin.write(turn + "\n")
            proc.stdin.flush()
            start = len(out.text)
            out.wait_for(lambda t, s=start: len(t) > s + 20)  # the answer is streaming
            proc.send_signal(signal.SIGINT)
            out.wait_for(lambda t, s=start: "(stopped;" in t[s:])
            assert proc.poll() is None, "the first Ctrl-C quit the program"
        out.wait_for(lambda t: t.count(">>> ") == 3)  # back at the prompt after the second stop
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in proc.stderr.read()
