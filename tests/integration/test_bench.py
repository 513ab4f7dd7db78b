"""``anp bench``: a tiny run of each benchmark, through the entry the CLI calls (run_bench).

Checks what a run leaves behind (results.json with every field, results.csv, non-empty
plots), that the numbers are plausible (ordered percentiles, counts equal the requests,
hashes checked) and that ``--compare`` against itself gives ratios of exactly 1. Nothing
here asserts a speed. Every run builds and removes its own namespaces.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import socket
import threading
from pathlib import Path

import pytest

from anp_async.bench import kernel_peer, report
from anp_async.bench.cli import parse_args, run_bench
from anp_async.bench.common import ECHO_PORT
from anp_async.nic.netns import Netns, created_namespaces, loopback_up

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

#: Namespaces that other tests' fixtures hold while a test here runs (not ours to check).
_others: set[str] = set()


@pytest.fixture(autouse=True)
def _namespaces_held_by_others() -> None:
    _others.clear()
    _others.update(created_namespaces())


def leftover_namespaces() -> set[str]:
    """Namespaces a benchmark run created and did not delete."""
    return created_namespaces() - _others


TOP_FIELDS = {
    "benchmark", "machine", "python", "kernel", "git", "parameters", "seed", "start", "end",
    "duration_s", "summaries", "plots",
}  # fmt: skip
MACHINE_FIELDS = {"platform", "cpu_count", "cpu_model"}
LATENCY_FIELDS = {
    "proto", "setup", "size", "direction", "count", "mean_us", "p50_us", "p90_us", "p99_us",
    "p99.9_us", "max_us", "rate_rps", "cpu_s_per_req", "cpu_s",
}  # fmt: skip


def _run(argv: list[str], out: Path) -> dict:
    assert run_bench(parse_args([*argv, "--out", str(out)])) == 0
    doc = json.loads((out / "results.json").read_text())
    assert TOP_FIELDS <= doc.keys()
    assert MACHINE_FIELDS <= doc["machine"].keys()
    assert doc["python"]["version"] and doc["kernel"]
    assert {"revision", "dirty"} <= doc["git"].keys()
    assert doc["seed"] == 7 and doc["parameters"]["seed"] == 7
    assert doc["start"] <= doc["end"]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(doc["summaries"]) > 0
    assert doc["plots"]
    for name in doc["plots"]:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    # --compare against itself: every ratio is exactly 1.0 (where the metric is defined)
    ratios = report.compare(doc, report.load_results(out))
    assert len(ratios) == len(doc["summaries"])
    for r in ratios:
        for m in report.METRICS[doc["benchmark"]]:
            assert math.isnan(r[m]) or r[m] == 1.0, (r, m)
    assert not leftover_namespaces()
    return doc


def test_latency_quick(tmp_path: Path) -> None:
    argv = [
        "latency", "--quick", "--modes", "interrupt,adaptive", "--sizes", "64,2000",
        "--count", "30", "--warmup", "5", "--seed", "7",
    ]  # fmt: skip
    doc = _run(argv, tmp_path)
    rows = doc["summaries"]
    for r in rows:
        assert LATENCY_FIELDS <= r.keys()
        assert r["count"] == 30 and not r["truncated"]
        assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"] <= r["p99.9_us"] <= r["max_us"]
        assert r["rate_rps"] > 0 and r["cpu_s"] >= 0
    keys = {(r["proto"], r["setup"], r["direction"]) for r in rows}
    for proto in ("tcp", "udp", "icmp"):
        for mode in ("interrupt", "adaptive"):
            for d in ("stack-server", "stack-client"):
                assert (proto, mode, d) in keys
        assert (proto, "kernel", "kernel") in keys
    assert ("tcp", "asyncio", "stack-server") in keys
    assert {r["size"] for r in rows} == {64, 2000}  # 2000 B UDP/ICMP travel as fragments
    samples = json.loads((tmp_path / "samples.json").read_text())
    assert len(samples) == len(rows) and all(len(v) == 30 for v in samples.values())
    assert "latency_cdf_tcp_stack-server.png" in doc["plots"]
    assert "percentiles_udp_stack-client.png" in doc["plots"]
    # free placement: nobody pinned, every phase's processes may run on every CPU
    every = sorted(os.sched_getaffinity(0))
    assert all(r["subject_cpus"] == every and r["peer_cpus"] == every for r in rows)


@pytest.mark.parametrize(("placement", "subject", "peer"), [("same", [0], [0]), ("apart", [0], [1])])
def test_latency_placement_pins_both_ends(
    tmp_path: Path, placement: str, subject: list[int], peer: list[int]
) -> None:
    argv = [
        "latency", "--quick", "--modes", "interrupt", "--sizes", "64", "--protos", "tcp,icmp",
        "--count", "30", "--warmup", "5", "--seed", "7", "--placement", placement,
    ]  # fmt: skip
    doc = _run(argv, tmp_path)
    assert doc["parameters"]["placement"] == placement
    rows = doc["summaries"]
    assert {r["direction"] for r in rows} == {"stack-server", "stack-client", "kernel"}
    for r in rows:  # the stack, the asyncio peer and the kernel baseline: each phase pinned
        assert (r["subject_cpus"], r["peer_cpus"]) == (subject, peer), r


def test_throughput_quick(tmp_path: Path) -> None:
    argv = ["throughput", "--modes", "interrupt", "--bytes", "1M", "--seed", "7"]
    doc = _run(argv, tmp_path)
    got = {(r["setup"], r["direction"]) for r in doc["summaries"]}
    assert got == {
        ("interrupt", "stack-send"), ("interrupt", "stack-receive"), ("kernel", "kernel"),
        ("asyncio", "stack-send"), ("asyncio", "stack-receive"),
    }  # fmt: skip
    for r in doc["summaries"]:
        assert r["bytes"] == 1 << 20 and r["verified"] is True
        assert r["mbps"] > 0 and r["seconds"] > 0 and r["cpu_s"] >= 0
    assert doc["plots"] == ["throughput.png"]


def test_livelock_quick(tmp_path: Path) -> None:
    argv = [
        "livelock", "--modes", "interrupt,poll", "--rates", "500,3000", "--duration", "0.3",
        "--drain", "0.2", "--seed", "7",
    ]  # fmt: skip
    doc = _run(argv, tmp_path)
    rows = doc["summaries"]
    assert [(r["setup"], r["target_pps"]) for r in rows] == [
        ("interrupt", 500), ("interrupt", 3000), ("poll", 500), ("poll", 3000),
    ]  # fmt: skip
    for r in rows:
        assert 0 < r["sent"] <= r["target_pps"] * 0.3 + 1
        assert 0 <= r["delivered"] <= r["sent"]
        assert r["offered_pps"] > 0 and r["cpu_s"] >= 0
    assert doc["plots"] == ["livelock.png"]


def test_peer_failure_reports_nothing(tmp_path: Path) -> None:
    """A run whose peer fails writes no results: the kernel client gets no time for its
    warm-up, reports an error, and the run is refused."""
    argv = ["latency", "--modes", "interrupt", "--protos", "udp", "--directions",
            "stack-server", "--sizes", "64", "--count", "5", "--warmup", "3",
            "--seed", "7", "--phase-time", "0"]  # fmt: skip
    assert run_bench(parse_args([*argv, "--out", str(tmp_path)])) == 1
    assert not (tmp_path / "results.json").exists()
    assert not leftover_namespaces()


def test_echo_mismatch_is_an_error(netns: Netns) -> None:
    """A UDP echo server that flips one byte: the kernel client raises, never reports."""
    loopback_up(netns)
    with netns.enter():
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", ECHO_PORT))
    srv.settimeout(5)

    def bad_echo() -> None:
        with contextlib.suppress(OSError):
            for _ in range(3):
                data, addr = srv.recvfrom(2048)
                srv.sendto(data[:-1] + bytes([data[-1] ^ 1]), addr)

    t = threading.Thread(target=bad_echo, daemon=True)
    t.start()
    try:
        with netns.enter(), pytest.raises(kernel_peer.PeerError, match="mismatch at request 0"):
            kernel_peer.udp_client("127.0.0.1", 100, 5, 0, 7, 5.0)
    finally:
        srv.close()
        t.join(5)
