"""`lmdeploy-sdk serve ray` as a real process, and app_builder (serve run / KubeRay's import_path)."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest
from ray import serve

from lmdeploy_sdk.cli.main import build_parser
from lmdeploy_sdk.server.ray import app_builder


def test_serve_ray_takes_every_api_server_flag_and_its_own():
    parser = build_parser()
    args = parser.parse_args(["serve", "ray", "m", "--num_replicas", "3", "--api-keys", "a", "b", "--server-port",
                              "9", "--enable-prefix-caching", "--min-replicas", "1", "--max-replicas", "4",
                              "--ray-address", "auto", "--session-ttl", "60"])
    assert (args.num_replicas, args.min_replicas, args.max_replicas) == (3, 1, 4)
    assert args.api_keys == ["a", "b"] and args.server_port == 9 and args.enable_prefix_caching
    assert args.ray_address == "auto" and args.session_ttl == 60
    api_flags = {a.dest for a in parser._subparsers._group_actions[0].choices["serve"]._subparsers
                 ._group_actions[0].choices["api_server"]._actions}
    ray_flags = {a.dest for a in parser._subparsers._group_actions[0].choices["serve"]._subparsers
                 ._group_actions[0].choices["ray"]._actions}
    assert api_flags <= ray_flags


def test_app_builder_takes_the_flags_as_a_dict(tiny_llama):
    app = app_builder({"model": str(tiny_llama), "num-replicas": 2, "enable_prefix_caching": True,
                       "api-keys": "k1 k2", "device": "cpu"})
    assert isinstance(app, serve.Application)
    # as `serve run lmdeploy_sdk.server.ray:app_builder model=... enable-prefix-caching=true` passes them
    assert isinstance(app_builder({"model": str(tiny_llama), "num-replicas": "2", "enable-prefix-caching": "true",
                                   "disable-metrics": "false"}), serve.Application)
    with pytest.raises(ValueError, match="--num-replica 2"):
        app_builder({"model": str(tiny_llama), "num-replica": 2})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_ray_serves_then_stops_on_sigterm_leaving_no_process(smollm2_dir):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmdeploy_sdk", "serve", "ray", str(smollm2_dir), "--model-name", "smol",
         "--num-replicas", "1", "--server-port", str(port), "--device", "cpu", "--session-len", "1024",
         "--cache-max-entry-count", "64", "--shutdown-grace", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any("serving on http://127.0.0.1" in line for line in lines):  # said once serve.run returned
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "serve ray did not come up"
            time.sleep(0.5)
        family = psutil.Process(proc.pid).children(recursive=True)  # Ray's GCS, raylet, workers
        assert len(family) >= 3
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 200
        r = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert r.status_code == 200 and r.json()["model"] == "smol"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        reader.join(timeout=10)
        assert proc.returncode == 0, "".join(lines)[-3000:]
        _, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, [p.pid for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
