from __future__ import annotations

from dataclasses import dataclass

from lmdeploy_sdk.server.metrics import ServerMetrics


@dataclass
class Stats:
    running: int = 3
    waiting: int = 2
    blocks_total: int = 100
    blocks_free: int = 60
    blocks_used: int = 40
    kv_cache_bits: int = 8
    prompt_tokens_total: int = 1234
    generated_tokens_total: int = 567


def sample(text: str, name: str) -> str:
    return next(line.split(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " "))


def test_engine_gauges_are_read_at_scrape_time():
    stats = Stats()
    metrics = ServerMetrics(lambda: stats)
    body, content_type = metrics.render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert sample(text, "lmdeploy_sdk_kv_blocks_used") == "40.0"
    assert sample(text, "lmdeploy_sdk_kv_blocks_free") == "60.0"
    assert sample(text, "lmdeploy_sdk_kv_cache_bits") == "8.0"
    assert sample(text, "lmdeploy_sdk_running_sequences") == "3.0"
    assert sample(text, "lmdeploy_sdk_waiting_sequences") == "2.0"
    assert sample(text, "lmdeploy_sdk_prompt_tokens_total") == "1234.0"
    assert sample(text, "lmdeploy_sdk_generation_tokens_total") == "567.0"
    stats.blocks_used = 0
    assert sample(metrics.render()[0].decode(), "lmdeploy_sdk_kv_blocks_used") == "0.0"


def test_no_engine_no_engine_metrics_and_separate_registries():
    a, b = ServerMetrics(lambda: None), ServerMetrics(lambda: None)
    a.observe_request("GET", "/v1/models", 200, 0.01)
    a.ttft.observe(0.2)
    text_a, text_b = a.render()[0].decode(), b.render()[0].decode()
    assert "kv_blocks_used" not in text_a
    assert 'lmdeploy_sdk_http_requests_total{method="GET",route="/v1/models",status="200"} 1.0' in text_a
    assert "lmdeploy_sdk_time_to_first_token_seconds_count 1.0" in text_a
    assert "lmdeploy_sdk_time_to_first_token_seconds_count 0.0" in text_b
