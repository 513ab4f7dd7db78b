"""``anp bench preload``: a tiny run through the entry the CLI calls (run_bench).

Checks what the run leaves behind (results.json with every setup and test, results.csv,
samples.json), that the numbers are plausible (ordered percentiles, counts equal the
requests, every transfer complete) and that the namespaces are gone. Nothing here asserts
a speed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from anp_async.bench.cli import parse_args, run_bench
from anp_async.nic.netns import created_namespaces

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]


def test_preload_bench_quick(tmp_path: Path) -> None:
    before = created_namespaces()
    argv = ["preload", "--quick", "--count", "50", "--warmup", "5", "--bytes", "1M",
            "--rounds", "2", "--out", str(tmp_path)]  # fmt: skip
    assert run_bench(parse_args(argv)) == 0
    assert created_namespaces() <= before
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["benchmark"] == "preload" and doc["parameters"]["modes"] == ["interrupt"]
    rows = doc["summaries"]
    got = {(r["test"], r["setup"], r["direction"]) for r in rows}
    pre, inp = "preload-interrupt", "inprocess-interrupt"
    assert got == {
        ("tcp_rr", "kernel", "kernel"), ("bulk_send", "kernel", "kernel"),
        ("bulk_receive", "kernel", "kernel"),
        *((t, pre, d) for t in ("tcp_rr", "bulk_send", "bulk_receive")
          for d in ("stack-client", "stack-server")),
        ("tcp_rr", inp, "stack-client"), ("tcp_rr", inp, "stack-server"),
        ("ipc_cost", "interrupt", "stack-client"), ("ipc_cost", "interrupt", "stack-server"),
    }  # fmt: skip
    for r in rows:
        if r["test"] == "tcp_rr":
            assert r["count"] == 50 and r["size"] == 64
            assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"] <= r["p99.9_us"] <= r["max_us"]
            assert r["rate_rps"] > 0
        elif r["test"].startswith("bulk_"):
            assert r["bytes"] == 1 << 20 and r["mbps"] > 0 and r["seconds"] > 0
            assert (r["stack_cpu_s_per_mb"] is None) == (r["setup"] == "kernel")
    by = {(r["test"], r["setup"], r["direction"]): r for r in rows}
    for setup in (pre, inp):
        for d in ("stack-client", "stack-server"):
            assert by[("tcp_rr", setup, d)]["stack_cpu_us_per_req"] > 0  # the anp process worked
    assert by[("tcp_rr", "kernel", "kernel")]["stack_cpu_us_per_req"] is None
    assert by[("tcp_rr", pre, "stack-client")]["client_cpu_us_per_req"] > 0
    for d in ("stack-client", "stack-server"):
        cost = by[("ipc_cost", "interrupt", d)]
        assert cost["anp_cpu_us_per_req_preload"] == by[("tcp_rr", pre, d)]["stack_cpu_us_per_req"]
        assert cost["p50_ratio_preload_to_kernel"] > 0
    # two interleaved rounds; each summary is one of its setup's rounds, whole
    measured = [r for r in rows if r["test"] != "ipc_cost"]
    assert len(doc["rounds"]) == 2 * len(measured)
    assert {r["round"] for r in doc["rounds"]} == {0, 1}
    assert all(r in doc["rounds"] for r in measured)
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    samples = json.loads((tmp_path / "samples.json").read_text())
    assert {k: len(v) for k, v in samples.items()} == {
        f"tcp_rr/{s}/{d}": 50
        for s, d in [("kernel", "kernel"), (pre, "stack-client"), (pre, "stack-server"),
                     (inp, "stack-client"), (inp, "stack-server")]
    }  # fmt: skip
