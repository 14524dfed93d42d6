"""The load script against a real server (tiny numbers; the H100 figures come from the same script)."""
from __future__ import annotations

import json

from lmdeploy_sdk.server import load_test


def test_load_script_reports_percentiles(server, tmp_path, capsys):
    out = tmp_path / "report.json"
    rc = load_test.main(["--url", server.url, "--concurrency", "4", "--requests", "10", "--prompt-words", "8",
                         "--max-tokens", "6", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["requests_ok"] == 10 and report["requests_failed"] == 0
    for metric in ("ttft_s", "itl_s", "e2e_s"):
        row = report[metric]
        assert 0 < row["p50"] <= row["p90"] <= row["p99"]
    assert report["ttft_s"]["p50"] <= report["e2e_s"]["p50"]
    assert report["output_tokens_per_s"] > 0
    printed = capsys.readouterr().out
    assert "ttft (ms)" in printed and "output tok/s" in printed


def test_load_script_counts_failures(server):
    report_rc = load_test.main(["--url", server.url, "--model", "no-such-model", "--concurrency", "2",
                                "--requests", "2", "--max-tokens", "2"])
    assert report_rc == 1
