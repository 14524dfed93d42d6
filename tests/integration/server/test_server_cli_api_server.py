"""`lmdeploy-sdk serve api_server` as a real process: engine built in the lifespan, graceful SIGTERM."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from lmdeploy_sdk.cli.main import build_parser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_flags_parse_in_both_spellings():
    parser = build_parser()
    dashed = parser.parse_args(["serve", "api_server", "m", "--server-port", "1234", "--api-keys", "a", "b",
                                "--max-batch-size", "4", "--session-len", "99", "--log-level", "debug"])
    underscored = parser.parse_args(["serve", "api_server", "m", "--server_port", "1234", "--api_keys", "a", "b",
                                     "--max_batch_size", "4", "--session_len", "99", "--log_level", "debug"])
    assert vars(dashed) == vars(underscored)
    assert dashed.server_port == 1234 and dashed.api_keys == ["a", "b"] and dashed.log_level == "DEBUG"
    default = parser.parse_args(["serve", "api_server"])
    assert default.model == "smollm2-135m-instruct" and default.server_port == 23333
    assert default.server_name == "127.0.0.1"
    gradio = parser.parse_args(["serve", "gradio", "http://127.0.0.1:1", "--server_port", "7000"])
    assert gradio.url_or_model == "http://127.0.0.1:1" and gradio.server_port == 7000
    client = parser.parse_args(["serve", "api_client", "http://x", "--api_key", "k", "--session_id", "3"])
    assert client.api_key == "k" and client.session_id == 3


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not become healthy")


def _stream(url: str, model: str, max_tokens: int, out: dict, started: threading.Event) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "go"}], "max_tokens": max_tokens,
            "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as resp:
        events = []
        for line in resp.iter_lines():
            if line.startswith("data:"):
                events.append(line[5:].strip())
                started.set()
        out["events"] = events


@pytest.mark.slow
def test_sigterm_drains_then_stops(tiny_llama):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmdeploy_sdk", "serve", "api_server", str(tiny_llama), "--server-port", str(port),
         "--model-name", "tiny", "--session-len", "4096", "--cache-max-entry-count", "512",
         "--cache-block-seq-len", "16", "--shutdown-grace", "1.5", "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_healthy(url, proc)
        long, short = {}, {}
        long_started, short_started = threading.Event(), threading.Event()
        threads = [threading.Thread(target=_stream, args=(url, "tiny", 3000, long, long_started)),
                   threading.Thread(target=_stream, args=(url, "tiny", 40, short, short_started))]
        threads[0].start()
        assert long_started.wait(30)
        threads[1].start()
        assert short_started.wait(30)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=60)
        # within the grace period a stream finishes as usual
        assert short["events"][-1] == "[DONE]"
        assert json.loads(short["events"][-2])["choices"][0]["finish_reason"] == "length"
        # past it, a stream ends with a clean error event, then [DONE]
        assert long["events"][-1] == "[DONE]"
        error = json.loads(long["events"][-2])["error"]
        assert error["code"] == "server_shutdown" and error["type"] == "service_unavailable"
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log = proc.stdout.read()
        proc.stdout.close()
    assert "POST /v1/chat/completions -> 200" in log  # request logging at --log-level info
    assert "draining" in log


def test_api_client_terminal_chat(server):
    """`serve api_client URL`: a multi-turn chat on one session; 'end' resets it, 'exit' quits."""
    proc = subprocess.run(
        [sys.executable, "-m", "lmdeploy_sdk", "serve", "api_client", server.url, "--session-id", "777",
         "--max-new-tokens", "5", "--temperature", "0"],
        input="Hello\nAnd more\nend\nexit\n", capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("assistant> ") == 2 and "(new conversation)" in out
    answers = [line.split("assistant> ", 1)[1] for line in out.splitlines() if "assistant> " in line]
    assert all(a.strip() for a in answers)
    # the session was ended on the way out: a new turn on it starts from an empty history
    fresh = httpx.post(f"{server.url}/v1/chat/interactive", timeout=30,
                       json={"prompt": "Hello", "session_id": 777, "request_output_len": 1}).json()
    assert fresh["history_tokens"] == 0
