"""The ingress's session table and the merged /metrics text."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmdeploy_sdk.server.ray.metrics import merge_metrics
from lmdeploy_sdk.server.ray.sessions import SessionTable


def test_the_table_drops_the_least_recently_used_past_its_capacity():
    table = SessionTable(2)
    table.record(1, "a")
    table.record(2, "b")
    assert table.owner(1) == "a"  # 1 is now the most recent
    table.record(3, "a")
    assert table.owner(2) is None and table.owner(1) == "a" and table.owner(3) == "a"
    assert len(table) == 2


def test_forgetting_only_what_the_caller_saw():
    table = SessionTable(4)
    table.record(1, "a")
    table.forget(1, "b")  # a stale answer from another replica leaves the entry
    assert table.owner(1) == "a"
    table.forget(1, "a")
    assert table.owner(1) is None
    table.forget(1)  # absent: nothing happens


def test_a_table_needs_room():
    with pytest.raises(ValueError, match="capacity=0"):
        SessionTable(0)


REPLICA_TEXT = """# HELP lmdeploy_sdk_http_requests_total HTTP requests by method, route and status
# TYPE lmdeploy_sdk_http_requests_total counter
lmdeploy_sdk_http_requests_total{{method="POST",route="/v1/completions",status="200"}} {n}.0
# HELP lmdeploy_sdk_running_sequences Sequences being generated
# TYPE lmdeploy_sdk_running_sequences gauge
lmdeploy_sdk_running_sequences {n}.0
"""


def test_each_family_once_and_every_sample_labelled_with_its_replica():
    text = merge_metrics({"r1": REPLICA_TEXT.format(n=3), "r2": REPLICA_TEXT.format(n=5)})
    assert text.count("# TYPE lmdeploy_sdk_http_requests_total counter") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}  # a scraper can parse it
    requests = {s.labels["replica"]: s.value for s in families["lmdeploy_sdk_http_requests"].samples
                if s.name.endswith("_total")}
    assert requests == {"r1": 3.0, "r2": 5.0}
    running = {s.labels["replica"]: s.value for s in families["lmdeploy_sdk_running_sequences"].samples}
    assert running == {"r1": 3.0, "r2": 5.0}
    assert all(s.labels.get("route") == "/v1/completions" for s in families["lmdeploy_sdk_http_requests"].samples)
