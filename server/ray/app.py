"""The Ray Serve application: one Ingress in front of N EngineReplicas.

    from lmdeploy_sdk.server.ray import build_app
    serve.run(build_app("path/to/model", options=RayServeOptions(num_replicas=2)), route_prefix="/")

or, for `serve run` and KubeRay's RayService (`import_path` + `args`), app_builder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import ray
    from ray import serve
except ModuleNotFoundError as e:  # pragma: no cover - exercised only without the extra
    raise ModuleNotFoundError("multi-replica serving needs Ray Serve: pip install 'lmdeploy-sdk[ray]'",
                              name=e.name) from e
from ray.serve.config import RequestRouterConfig
from ray.serve.schema import LoggingConfig

from lmdeploy_sdk.messages import TurbomindEngineConfig
from lmdeploy_sdk.server.ray.ingress import Ingress
from lmdeploy_sdk.server.ray.replica import EngineReplica
from lmdeploy_sdk.server.ray.router import SessionAffinityRouter
from lmdeploy_sdk.server.settings import ServerSettings

APP_NAME = "lmdeploy-sdk"
# The replicas' app logs each request itself (access_log.py); Ray's own access lines would double them.
_QUIET = LoggingConfig(enable_access_log=False)
# A replica whose engine fails to build is retried this often before the deploy fails (Ray's
# default, 20, repeats a bad model's load for minutes before saying why).
_CONSTRUCTOR_TRIES = 3


@dataclass(frozen=True)
class RayServeOptions:
    """num_replicas: fixed replica count; min_replicas/max_replicas: autoscale between them
    instead (Ray Serve's autoscaler, on requests in flight per replica, target
    `target_ongoing_requests`). num_cpus/num_gpus: per replica; num_gpus None means the
    engine's tp when the Ray cluster has GPUs and the engine is not on the CPU, else 0."""

    num_replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: int = 64
    num_cpus: float = 1.0
    num_gpus: float | None = None

    def __post_init__(self) -> None:
        if self.num_replicas < 1:
            raise ValueError(f"num_replicas={self.num_replicas} must be >= 1")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("min_replicas and max_replicas go together (autoscaling between them)")
        if self.min_replicas is not None and not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas}, max_replicas={self.max_replicas}: "
                             "need 0 <= min_replicas <= max_replicas, and max_replicas >= 1")
        if self.max_replicas is not None and self.max_replicas < 1:
            raise ValueError(f"max_replicas={self.max_replicas} must be >= 1")
        if self.target_ongoing_requests < 1:
            raise ValueError(f"target_ongoing_requests={self.target_ongoing_requests} must be >= 1")
        if self.num_cpus < 0 or (self.num_gpus is not None and self.num_gpus < 0):
            raise ValueError(f"num_cpus={self.num_cpus}, num_gpus={self.num_gpus} must be >= 0")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None

    @property
    def most_replicas(self) -> int:
        return self.max_replicas if self.max_replicas is not None else self.num_replicas


def replica_resources(options: RayServeOptions, engine_config: TurbomindEngineConfig) -> dict[str, float]:
    """What Ray reserves per replica: num_cpus, and num_gpus (the engine's tp when the cluster
    has GPUs and the engine is not on the CPU, unless options say otherwise)."""
    gpus = options.num_gpus
    if gpus is None:
        on_cpu = (engine_config.device or "").startswith("cpu")
        has_gpus = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
        gpus = engine_config.tp if has_gpus and not on_cpu else 0
    return {"num_cpus": options.num_cpus, "num_gpus": gpus}


def check_room(options: RayServeOptions, engine_config: TurbomindEngineConfig) -> None:
    """Raise ValueError when the connected cluster cannot hold the replicas: Ray would wait
    for resources that never come, and the deploy would hang."""
    need = replica_resources(options, engine_config)
    have = ray.cluster_resources()
    replicas = options.min_replicas if options.autoscaling else options.num_replicas
    for kind, resource, flag in (("num_cpus", "CPU", "--num-cpus-per-replica"),
                                 ("num_gpus", "GPU", "--num-gpus-per-replica")):
        total = need[kind] * replicas
        available = have.get(resource, 0)
        if total > available:
            raise ValueError(f"{replicas} replica(s) x {need[kind]:g} {resource} each need {total:g}; "
                             f"this Ray cluster has {available:g} (lower {flag} or the replica count)")


def build_app(model: str, engine_config: TurbomindEngineConfig | None = None,
              settings: ServerSettings | None = None, *, model_name: str | None = None,
              options: RayServeOptions | None = None) -> serve.Application:
    """The application `serve ray` runs: bind it with serve.run(app, route_prefix="/").

    model: as for `serve api_server`; it is also the served name unless model_name is given
    (a relative local path is made absolute for the replicas, the name stays as typed).
    """
    engine_config = engine_config or TurbomindEngineConfig()
    settings = settings or ServerSettings()
    options = options or RayServeOptions()
    local = Path(model)
    load_from = str(local.resolve()) if local.exists() else model
    scaling: dict[str, Any] = {"num_replicas": options.num_replicas}
    if options.autoscaling:
        scaling = {"autoscaling_config": {"min_replicas": options.min_replicas,
                                          "max_replicas": options.max_replicas,
                                          "target_ongoing_requests": options.target_ongoing_requests}}
    replica = serve.deployment(
        EngineReplica,
        name="EngineReplica",
        max_ongoing_requests=settings.max_concurrent_requests,
        graceful_shutdown_timeout_s=settings.shutdown_grace_s,
        max_constructor_retry_count=_CONSTRUCTOR_TRIES,
        ray_actor_options=replica_resources(options, engine_config),
        request_router_config=RequestRouterConfig(request_router_class=SessionAffinityRouter),
        logging_config=_QUIET,
        **scaling,
    )
    ingress = serve.deployment(
        serve.ingress()(Ingress),
        name="Ingress",
        num_replicas=1,  # the session table lives in it (ingress.py)
        max_ongoing_requests=settings.max_concurrent_requests * options.most_replicas,
        ray_actor_options={"num_cpus": 0},
        logging_config=_QUIET,
    )
    engine = replica.bind(load_from, engine_config, settings, model_name or model)
    return ingress.bind(engine, settings.max_sessions * options.most_replicas)


def app_builder(args: dict[str, Any]) -> serve.Application:
    """For `serve run lmdeploy_sdk.server.ray:app_builder model=... num-replicas=2` and a
    RayService's `import_path`: args are `serve ray`'s flags without dashes, e.g.
    {"model": "...", "num-replicas": 2, "api-keys": "k1 k2", "enable-prefix-caching": true}."""
    from lmdeploy_sdk.cli.serve_ray import app_from_builder_args

    return app_from_builder_args(args)
