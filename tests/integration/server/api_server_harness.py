"""Start real uvicorn servers on 127.0.0.1 (a port the OS picks) for the server tests."""
from __future__ import annotations

import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import httpx

from lmdeploy_sdk.server.launch import build_server

SESSION_LEN = 256
# Small blocks and a fixed block count keep the KV numbers in /metrics easy to reason about.
ENGINE_CONFIG = dict(session_len=SESSION_LEN, cache_block_seq_len=16, cache_max_entry_count=1024,
                     max_batch_size=32)


@dataclass
class RunningServer:
    url: str
    app: object

    def metric(self, name: str) -> float:
        """One unlabelled sample from /metrics (e.g. 'lmdeploy_sdk_kv_blocks_used')."""
        return scrape(self.url, name)


def scrape(url: str, name: str, headers: dict | None = None) -> float:
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics:\n{text}"
    return float(m.group(1))


@contextmanager
def running_server(app) -> Iterator[RunningServer]:
    """Serve `app` with uvicorn in a thread on a port the OS picks; stop it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = build_server(app, "127.0.0.1", port, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
