"""`lmdeploy-sdk serve ray MODEL --num-replicas N`: `serve api_server`'s server as replicas on
Ray Serve behind one address (every api_server flag, plus how many replicas and where)."""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from lmdeploy_sdk.cli.engine_args import engine_config
from lmdeploy_sdk.cli.serve import add_api_server_args, api_server_settings, setup_logging
from lmdeploy_sdk.messages import TurbomindEngineConfig

RAY_MISSING = "serve ray needs Ray Serve, which is not installed: pip install 'lmdeploy-sdk[ray]'"


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("ray", help="the API server as replicas on Ray Serve, behind one address")
    add_api_server_args(p)
    add_ray_args(p)
    p.set_defaults(func=run_serve_ray)


def add_ray_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ray")
    g.add_argument("--num-replicas", type=int, default=1, help="replicas, each one engine (default 1)")
    g.add_argument("--min-replicas", type=int, default=None,
                   help="autoscale: at least this many replicas (with --max-replicas)")
    g.add_argument("--max-replicas", type=int, default=None, help="autoscale: at most this many replicas")
    g.add_argument("--target-ongoing-requests", type=int, default=64,
                   help="autoscale: requests in flight per replica the autoscaler aims for (default 64)")
    g.add_argument("--num-cpus-per-replica", type=float, default=1.0, help="CPUs Ray reserves per replica")
    g.add_argument("--num-gpus-per-replica", type=float, default=None,
                   help="GPUs Ray reserves per replica (default: --tp when the cluster has GPUs, else 0)")
    g.add_argument("--ray-address", default=None,
                   help="a running Ray cluster ('auto', 'ray://head:10001'); default: $RAY_ADDRESS, "
                        "else a new local Ray instance that stops with this command")


def ray_options(args: argparse.Namespace):
    from lmdeploy_sdk.server.ray import RayServeOptions

    return RayServeOptions(
        num_replicas=args.num_replicas, min_replicas=args.min_replicas, max_replicas=args.max_replicas,
        target_ongoing_requests=args.target_ongoing_requests, num_cpus=args.num_cpus_per_replica,
        num_gpus=args.num_gpus_per_replica,
    )


def _application(args: argparse.Namespace, config: TurbomindEngineConfig, settings=None, options=None):
    from lmdeploy_sdk.server.ray import build_app

    return build_app(args.model, config, settings or api_server_settings(args), model_name=args.model_name,
                     options=options or ray_options(args))


def run_serve_ray(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    try:
        import ray
        from ray import serve

        from lmdeploy_sdk.server.ray.app import APP_NAME, check_room
    except ImportError:
        raise SystemExit(f"lmdeploy-sdk serve: error: {RAY_MISSING}") from None
    settings, options = api_server_settings(args), ray_options(args)  # bad values fail here, before Ray starts
    config = engine_config(args)
    if args.ray_address is None:  # a local instance: what cannot load fails here, not in N replicas
        from lmdeploy_sdk.engine.factory import preflight

        preflight(args.model, config)
    log = logging.getLogger("lmdeploy_sdk.server")
    serving, stop = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: object) -> None:  # in place of Ray's, which aborts the process
        if not serving.is_set():
            raise KeyboardInterrupt  # still starting (serve.run): give up on it
        stop.set()

    ray.init(address=args.ray_address, logging_level=logging.WARNING, log_to_driver=args.log_level == "DEBUG")
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs its own
        signal.signal(sig, on_signal)
    try:
        if args.ray_address is None:  # a local instance cannot grow: replicas it cannot hold would wait forever
            check_room(options, config)
        serve.start(http_options={"host": args.server_name, "port": args.server_port})
        serve.run(_application(args, config, settings, options), name=APP_NAME, route_prefix="/")
        serving.set()
        count = f"{options.min_replicas}..{options.max_replicas}" if options.autoscaling else options.num_replicas
        log.info("%s: %s replica(s) serving on http://%s:%d", args.model, count, args.server_name, args.server_port)
        while not stop.wait(1.0):
            pass
        log.info("stopping: replicas drain (grace %.0f s), then Ray Serve shuts down", args.shutdown_grace)
    except KeyboardInterrupt:  # a stop asked for while starting is still a clean stop
        log.warning("stopped before the replicas were all serving; shutting down")
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def app_from_builder_args(builder_args: dict[str, Any]):
    """`serve ray`'s flags as a dict ({"model": ..., "num-replicas": 2, "enable-prefix-caching": true};
    values may be strings, as `serve run` passes them) -> the application. The host check is off
    unless allowed-hosts is given: Ray's proxy, not this process, decides where it listens."""
    argv: list[str] = []
    given = {key.replace("_", "-"): value for key, value in builder_args.items()}
    if "model" in given:
        argv.append(str(given.pop("model")))
    given.setdefault("server-name", "0.0.0.0")
    for key, value in given.items():
        if isinstance(value, str) and value.lower() in ("true", "false"):  # `serve run ... flag=true`
            value = value.lower() == "true"
        if value is None or value is False:
            continue
        argv.append(f"--{key}")
        if value is True:
            continue
        argv += [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value).split()
    parser = argparse.ArgumentParser(prog="lmdeploy_sdk.server.ray:app_builder", exit_on_error=False,
                                     allow_abbrev=False)
    add_api_server_args(parser)
    add_ray_args(parser)
    try:
        args, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise ValueError(f"app_builder args: {e}") from None
    if unknown:
        raise ValueError(f"app_builder args: not a `serve ray` flag: {' '.join(unknown)}")
    return _application(args, engine_config(args))
