"""Throughput of `serve ray` with 1 replica and with 2, on this machine (CPU), through one address.

Starts a local Ray instance with this machine's cores, deploys the embedded model (or --model)
as Ray Serve replicas behind the ingress, runs the server load test (server/load_test.py:
N concurrent streaming clients) against it, then redeploys with another replica layout and
runs it again. Layouts, each "replicas x CPUs per replica" (Ray sets a replica's torch
threads to its CPUs):

    1x1  one engine on one core
    1xN  one engine on all N cores (what `serve api_server` would use)
    2x1  two engines, one core each (what `serve ray --num-replicas 2` gives)

    python benchmarks/ray_replicas.py --json ray_replicas.json

About 4 minutes on 2 CPU cores. Other load on the machine skews the numbers.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time

import ray
from ray import serve

from lmdeploy_sdk import TurbomindEngineConfig
from lmdeploy_sdk.model_source import DEFAULT_MODEL
from lmdeploy_sdk.server import ServerSettings
from lmdeploy_sdk.server.load_test import LoadConfig, format_report, run_load
from lmdeploy_sdk.server.ray import RayServeOptions, build_app
from lmdeploy_sdk.server.ray.app import APP_NAME


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(model: str, replicas: int, cpus: float, url: str, args: argparse.Namespace) -> dict:
    engine = TurbomindEngineConfig(device="cpu", session_len=2048, max_batch_size=args.concurrency,
                                   cache_max_entry_count=512)
    app = build_app(model, engine, ServerSettings(), model_name="bench",
                    options=RayServeOptions(num_replicas=replicas, num_cpus=cpus))
    started = time.monotonic()
    serve.run(app, name=APP_NAME, route_prefix="/")
    deploy_s = time.monotonic() - started
    warm = LoadConfig(url, "bench", min(args.concurrency, 4), min(args.concurrency, 4), args.prompt_words, 8)
    asyncio.run(run_load(warm))
    report = asyncio.run(run_load(LoadConfig(url, "bench", args.concurrency, args.requests, args.prompt_words,
                                             args.max_tokens)))
    serve.delete(APP_NAME)
    print(f"\n== {replicas} replica(s) x {cpus:g} CPU (deployed in {deploy_s:.0f} s)")
    print(format_report(report))
    return {"replicas": replicas, "cpus_per_replica": cpus, "deploy_s": deploy_s, "report": report}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--prompt-words", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    from lmdeploy_sdk.model_source import resolve_model_path

    model = str(resolve_model_path(args.model))
    port = _free_port()
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        layouts = [(1, 1.0), (1, float(cores)), (2, 1.0)] if cores > 1 else [(1, 1.0)]
        results = [measure(model, n, c, url, args) for n, c in layouts]
    finally:
        serve.shutdown()
        ray.shutdown()
    base = results[0]["report"]["output_tokens_per_s"]
    print(f"\n{'layout':<10}{'req/s':>10}{'out tok/s':>12}{'vs 1x1':>9}{'TTFT p50 ms':>13}")
    for r in results:
        rep = r["report"]
        print(f"{r['replicas']}x{r['cpus_per_replica']:<8g}{rep['requests_per_s']:>10.2f}"
              f"{rep['output_tokens_per_s']:>12.1f}{rep['output_tokens_per_s'] / base:>8.2f}x"
              f"{rep['ttft_s']['p50'] * 1000:>13.0f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"cores": cores, "args": vars(args), "results": results}, f, indent=2)
    return 0 if all(r["report"]["requests_failed"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
