"""A local Ray instance serving the embedded model as replicas, for the tests; on exit it
shuts Ray down and checks that none of its processes is left."""
from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil
import ray
from ray import serve

from lmdeploy_sdk import TurbomindEngineConfig
from lmdeploy_sdk.server import ServerSettings
from lmdeploy_sdk.server.ray import RayServeOptions, build_app
from lmdeploy_sdk.server.ray.app import APP_NAME

MODEL_NAME = "smollm2"
REPLICA_HEADER = "x-lmdeploy-replica"
ENGINE = dict(device="cpu", session_len=1024, max_batch_size=8, cache_max_entry_count=256,
              enable_prefix_caching=True)


@dataclass
class RayServer:
    url: str
    port: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_pid(replica_id: str) -> int:
    actor = ray.get_actor(f"SERVE_REPLICA::{APP_NAME}#EngineReplica#{replica_id}", namespace="serve")
    return ray.get(actor.__ray_call__.remote(lambda _: os.getpid()))


def _ray_processes() -> list[psutil.Process]:
    """This Ray instance's processes: its raylet and GCS and every process under the raylet."""
    node = ray._private.worker._global_node
    roots = [psutil.Process(p.process.pid) for name, procs in node.all_processes.items() for p in procs
             if p.process is not None]
    found = {p.pid: p for p in roots}
    for root in roots:
        for child in root.children(recursive=True):
            found[child.pid] = child
    return list(found.values())


def deploy(model_dir: Path, replicas: int, **settings) -> None:
    """(Re)deploy the application on the running Ray instance; returns once it serves."""
    app = build_app(str(model_dir), TurbomindEngineConfig(**ENGINE), ServerSettings(**settings),
                    model_name=MODEL_NAME, options=RayServeOptions(num_replicas=replicas))
    serve.run(app, name=APP_NAME, route_prefix="/")


@contextmanager
def ray_server(model_dir: Path, replicas: int, **settings) -> Iterator[RayServer]:
    ray.init(num_cpus=max(2, replicas), include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    processes: list[psutil.Process] = []
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deploy(model_dir, replicas, **settings)
        processes = _ray_processes()
        yield RayServer(f"http://127.0.0.1:{port}", port)
    finally:
        processes = processes or _ray_processes()
        serve.shutdown()
        ray.shutdown()
        _, alive = psutil.wait_procs(processes, timeout=30)
        assert not alive, f"Ray processes left behind: {[p.pid for p in alive]}"


def replica_counts(metrics_text: str) -> dict[str, float]:
    """Requests each replica answered, from the merged /metrics."""
    counts: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("lmdeploy_sdk_http_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            replica = labels.split('replica="', 1)[1].split('"', 1)[0]
            counts[replica] = counts.get(replica, 0) + float(value)
    return counts


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)
