"""``anp bench burst``: a tiny burst against the stack and asyncio on kernel sockets.

Checks the results document (a row per setup and connection count, every connection
echoed, the server's CPU measured, the stack's cookie and TAP-drop counts present) and
that ``--compare`` against itself gives ratios of 1. Nothing here asserts a speed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from anp_async.bench import report
from anp_async.bench.cli import parse_args, run_bench
from anp_async.nic.netns import created_namespaces

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def test_burst_quick(tmp_path: Path) -> None:
    before = created_namespaces()
    argv = ["burst", "--modes", "adaptive", "--conns", "5,20", "--size", "3000",
            "--rounds", "2", "--out", str(tmp_path)]  # fmt: skip
    assert run_bench(parse_args(argv)) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["benchmark"] == "burst"
    rows = doc["summaries"]
    assert [(r["setup"], r["conns"]) for r in rows] == [
        ("adaptive", 5), ("adaptive", 20), ("asyncio", 5), ("asyncio", 20),
    ]  # fmt: skip
    for r in rows:
        assert r["rounds"] == 2 and r["size"] == 3000
        assert r["failed"] == 0 and r["errors"] == {}
        assert 0 < r["seconds"] <= r["seconds_max"] and r["cpu_s_per_conn"] > 0
        # Per-connection times: connected before echoed, p50 <= p99 <= max <= the round.
        assert 0 < r["connected_p50"] <= r["echoed_p50"]
        assert r["echoed_p50"] <= r["echoed_p99"] <= r["echoed_max"] <= r["seconds_max"]
        if r["setup"] == "adaptive":
            assert r["syncookies_sent"] == 0 and r["tap_dropped"] >= 0
            # Each stack round has the kernel round after it; their ratio's median.
            assert r["x_kernel_paired"] > 0
            assert r["counters"]["conn_segments_out"] > 0
            assert 0 < r["cpu_us_per_segment"] < r["cpu_s_per_conn"] * 1e6
    ratios = report.compare(doc, report.load_results(tmp_path))
    assert len(ratios) == len(rows)
    for r in ratios:
        for m in report.METRICS["burst"]:
            assert math.isnan(r[m]) or r[m] == 1.0, (r, m)
    assert created_namespaces() <= before

