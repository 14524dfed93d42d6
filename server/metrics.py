"""Prometheus metrics of one server: HTTP requests, latency histograms, and engine gauges.

Each app gets its own registry (no process-global state), so several apps or
tests in one process never mix their numbers. Engine figures (sequences, KV
blocks, token totals) are read from `AsyncEngine.stats()` at scrape time.
"""
from __future__ import annotations

from typing import Callable, Iterator, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class EngineStats(Protocol):
    """What `AsyncEngine.stats()` returns, as far as the metrics read it."""

    running: int
    waiting: int
    blocks_total: int
    blocks_free: int
    blocks_used: int
    kv_cache_bits: int
    prompt_tokens_total: int
    generated_tokens_total: int

PREFIX = "lmdeploy_sdk"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)


class EngineCollector(Collector):
    """Reads the engine's counters when Prometheus scrapes; nothing is cached here."""

    def __init__(self, stats: Callable[[], EngineStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        if s is None:  # engine not built yet (or already closed)
            return
        gauges = {
            "running_sequences": ("Sequences being generated", s.running),
            "waiting_sequences": ("Sequences queued for the engine", s.waiting),
            "kv_blocks_used": ("KV cache blocks in use", s.blocks_used),
            "kv_blocks_free": ("KV cache blocks free", s.blocks_free),
            "kv_blocks_total": ("KV cache blocks in all", s.blocks_total),
            "kv_cache_bits": ("Bits of a cached K or V element (8 or 4: a quantized cache)", s.kv_cache_bits),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)
        yield CounterMetricFamily(f"{PREFIX}_prompt_tokens", "Prompt tokens received", value=s.prompt_tokens_total)
        yield CounterMetricFamily(
            f"{PREFIX}_generation_tokens", "Tokens generated", value=s.generated_tokens_total
        )


class SessionCollector(Collector):
    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(f"{PREFIX}_sessions", "Sessions the server keeps between requests",
                                value=self._count())


class ServerMetrics:
    def __init__(self, stats: Callable[[], EngineStats | None], sessions: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"{PREFIX}_http_requests", "HTTP requests by method, route and status",
            ["method", "route", "status"], registry=self.registry,
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds", "Time from request to its first generated token",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.itl = Histogram(
            f"{PREFIX}_inter_token_latency_seconds", "Time between successive tokens of one sequence",
            buckets=_ITL_BUCKETS, registry=self.registry,
        )
        self.e2e = Histogram(
            f"{PREFIX}_request_latency_seconds", "Time from request to its last token",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry.register(EngineCollector(stats))
        self.registry.register(SessionCollector(sessions))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        """(exposition body, its content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
