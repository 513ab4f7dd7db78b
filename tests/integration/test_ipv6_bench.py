"""``anp bench latency --family 6``: the same phases over IPv6 (the stack dual-stack, the
kernel ends with fd00:: addresses), ICMPv6 echo on a raw socket; nothing about speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anp_async.bench.cli import parse_args, run_bench

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def test_latency_family6(tmp_path: Path) -> None:
    argv = [
        "latency", "--family", "6", "--quick", "--modes", "interrupt", "--sizes", "2000",
        "--count", "20", "--warmup", "3", "--seed", "7", "--out", str(tmp_path),
    ]  # fmt: skip
    assert run_bench(parse_args(argv)) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["parameters"]["family"] == 6
    rows = doc["summaries"]
    keys = {(r["proto"], r["setup"], r["direction"], r["size"]) for r in rows}
    for proto in ("tcp", "udp", "icmp"):
        for d in ("stack-server", "stack-client"):
            # 2000 B UDP and ICMPv6 travel as IPv6 fragments, both ways
            assert (proto, "interrupt", d, 2000) in keys
        assert (proto, "kernel", "kernel", 2000) in keys
    for r in rows:
        assert r["count"] == 20 and not r["truncated"]
        assert 0 < r["p50_us"] <= r["max_us"]
