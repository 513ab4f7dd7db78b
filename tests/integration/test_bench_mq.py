"""``anp bench latency|throughput|burst --queues 2``: the stack peer is a multi-queue host
(quick sizes; every run builds and removes its own namespaces)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "anp_async.cli", "bench", *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _rows(out: Path) -> list[dict]:
    doc = json.loads((out / "results.json").read_text())
    assert doc["parameters"]["queues"] in (1, 2)
    return list(doc["summaries"])


def test_latency_with_two_queues_and_compare_against_one(tmp_path: Path) -> None:
    common = ["--quick", "--modes", "interrupt", "--protos", "tcp,udp", "--sizes", "64",
              "--count", "100", "--warmup", "10", "--no-baselines"]  # fmt: skip
    q2 = tmp_path / "q2"
    res = _bench("latency", *common, "--queues", "2", "--out", str(q2))
    assert "stack: 2 queues" in res.stdout
    rows = _rows(q2)
    assert {(r["proto"], r["direction"]) for r in rows} == {
        (p, d) for p in ("tcp", "udp") for d in ("stack-server", "stack-client")
    }
    for r in rows:
        assert r["queues"] == 2 and r["count"] == 100 and r["cpu_s_per_req"] > 0, r
    q1 = tmp_path / "q1"
    res = _bench("latency", *common, "--out", str(q1), "--compare", str(q2))
    assert "stack: " not in res.stdout.split("new / old")[0]  # one queue: title as before
    assert "new / old" in res.stdout and "(stack queues: new 1, old 2)" in res.stdout
    assert all(r["queues"] == 1 for r in _rows(q1))


def test_throughput_and_burst_with_two_queues(tmp_path: Path) -> None:
    out = tmp_path / "thr"
    res = _bench("throughput", "--quick", "--queues", "2", "--modes", "interrupt",
                 "--bytes", "2M", "--out", str(out))  # fmt: skip
    assert "stack: 2 queues" in res.stdout
    stack = [r for r in _rows(out) if r["setup"] == "interrupt"]
    assert {r["direction"] for r in stack} == {"stack-send", "stack-receive"}
    assert all(r["queues"] == 2 and r["verified"] and r["cpu_s"] > 0 for r in stack)
    out = tmp_path / "burst"
    res = _bench("burst", "--quick", "--queues", "2", "--modes", "interrupt", "--conns", "40",
                 "--rounds", "1", "--size", "4K", "--out", str(out))  # fmt: skip
    assert "stack: 2 queues" in res.stdout
    (row,) = [r for r in _rows(out) if r["setup"] == "interrupt"]
    assert row["queues"] == 2 and row["failed"] == 0 and row["cpu_s_per_conn"] > 0


def test_queues_refuse_what_one_worker_cannot_stand_for(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "anp_async.cli", "bench", "latency", "--quick", "--queues",
            "2", "--family", "6", "--out", str(tmp_path / "x")]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "--family 6" in res.stderr
    argv = [sys.executable, "-m", "anp_async.cli", "bench", "livelock", "--queues", "2"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--queues" in res.stderr  # livelock has no --queues
