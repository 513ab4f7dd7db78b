"""``python -m anp_async.bench.profile_rr`` and ``tap_floor``: the in-process profiling
harness runs each of its workloads, and the floor its pings, against a kernel client in a
namespace of its own and reports a figure (nothing here asserts a speed; the namespace is
gone afterwards)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from anp_async.nic.netns import NETNS_DIR

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


@pytest.mark.parametrize(
    "argv",
    [
        ["rr", "--count", "200"],
        ["icmp", "--count", "200", "--mode", "adaptive"],
        ["bulk", "--bytes", "4M", "--sink", "buffered"],
        ["send", "--bytes", "4M", "--mode", "adaptive"],
    ],
    ids=["rr", "icmp", "bulk-buffered", "send"],
)
def test_profile_rr_workloads(argv: list[str]) -> None:
    before = _prof_namespaces()
    out = subprocess.run(
        [sys.executable, "-m", "anp_async.bench.profile_rr", *argv],
        capture_output=True, text=True, timeout=150, check=True,
    )  # fmt: skip
    res = json.loads(out.stdout.splitlines()[0])
    bulk = {"bulk": "bulk-receive", "send": "bulk-send"}
    assert res["what"] == bulk.get(argv[0], argv[0])
    if argv[0] in bulk:
        assert res["bytes"] == 4 << 20 and res["mbps"] > 0 and res["cpu_ms_per_mb"] > 0
    else:
        assert res["count"] == 200 and res["rr_us"] > 0 and res["cpu_us_per_req"] > 0
    assert _prof_namespaces() == before  # its namespace (anp-prof-*) is removed


def test_tap_floor_answers_pings() -> None:
    before = _prof_namespaces()
    out = subprocess.run(
        [sys.executable, "-m", "anp_async.bench.tap_floor", "--count", "200"],
        capture_output=True, text=True, timeout=150, check=True,
    )  # fmt: skip
    res = json.loads(out.stdout)
    assert res["what"] == "tap-floor" and res["offload"] and res["count"] == 200
    assert res["rr_us"] > 0 and res["cpu_us_per_req"] > 0
    assert res["cpu_us_per_req"] == pytest.approx(res["user_us_per_req"] + res["sys_us_per_req"])
    assert _prof_namespaces() == before


def test_tap_floor_blocking_answers_pings() -> None:
    before = _prof_namespaces()
    out = subprocess.run(
        [sys.executable, "-m", "anp_async.bench.tap_floor", "--count", "200", "--blocking"],
        capture_output=True, text=True, timeout=150, check=True,
    )  # fmt: skip
    res = json.loads(out.stdout)
    assert res["what"] == "tap-floor-blocking" and res["count"] == 200
    assert res["rr_us"] > 0 and res["cpu_us_per_req"] > 0
    assert _prof_namespaces() == before


def _prof_namespaces() -> set[str]:
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    return {n for n in names if n.startswith(("anp-prof", "anp-floor"))}
