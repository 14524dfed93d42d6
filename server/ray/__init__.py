"""Many replicas of the API server behind one address, on Ray Serve.

An Ingress deployment takes the HTTP requests, reads which session a request belongs to,
and hands it through a DeploymentHandle to the EngineReplica deployment; Ray Serve's
request router (our SessionAffinityRouter) places it: a session's requests on the replica
that holds its KV cache, others by load. Each replica runs one engine behind the very
Litestar app `serve api_server` runs (create_app), called in-process.

forward.py    what travels from the ingress to a replica; the session fields of a body (no Ray)
asgi_call.py  run an ASGI app in-process: its lifespan, and one request as its messages (no Ray)
sessions.py   the ingress's table of which replica holds which session (no Ray)
metrics.py    the replicas' /metrics merged into one text, labelled by replica (no Ray)
router.py     SessionAffinityRouter (a Ray Serve RequestRouter)
replica.py    EngineReplica (a Ray Serve deployment)
ingress.py    Ingress (a Ray Serve ASGI deployment)
app.py        build_app(...) and app_builder(args): the Ray Serve application

Only app.py is imported from here, on first use, so `lmdeploy_sdk.server` needs no Ray.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["build_app", "app_builder", "RayServeOptions"]

if TYPE_CHECKING:
    from lmdeploy_sdk.server.ray.app import RayServeOptions, app_builder, build_app


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'lmdeploy_sdk.server.ray' has no attribute {name!r}")
    return getattr(importlib.import_module("lmdeploy_sdk.server.ray.app"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
