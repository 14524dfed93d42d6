from __future__ import annotations

import math

from lmdeploy_sdk.server.load_test import percentiles


def test_percentiles_of_a_range():
    p = percentiles([float(i) for i in range(1, 101)])
    assert p["p50"] == 51.0 and p["p90"] == 90.0 and p["p99"] == 99.0
    assert p["mean"] == 50.5


def test_percentiles_of_nothing_are_nan():
    assert all(math.isnan(v) for v in percentiles([]).values())


def test_percentiles_of_one_value():
    assert percentiles([0.25]) == {"p50": 0.25, "p90": 0.25, "p99": 0.25, "mean": 0.25}
