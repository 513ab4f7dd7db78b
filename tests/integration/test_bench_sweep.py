"""``anp bench`` made for experiments: a knob swept, runs repeated with their spread, the
warning on thin percentiles, and the livelock application's real work per datagram. Tiny
runs (each builds and removes its own namespaces); nothing here asserts a speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anp_async.bench.cli import parse_args, run_bench
from anp_async.nic.netns import created_namespaces

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def _run(argv: list[str], out: Path) -> dict:
    before = created_namespaces()
    assert run_bench(parse_args([*argv, "--out", str(out)])) == 0
    assert created_namespaces() <= before
    return json.loads((out / "results.json").read_text())


def test_latency_sweep_with_repeats(tmp_path: Path, capsys) -> None:
    argv = [
        "latency", "--sweep", "rx-usecs=0,200", "--set", "rx-frames=8", "--repeat", "2",
        "--no-baselines", "--protos", "udp", "--directions", "stack-server", "--sizes", "64",
        "--count", "40", "--warmup", "5", "--seed", "7",
    ]  # fmt: skip
    doc = _run(argv, tmp_path)
    rows = doc["summaries"]
    assert [r["setup"] for r in rows] == ["coalesce rx_usecs=0", "coalesce rx_usecs=200"]
    for r in rows:
        assert r["runs"] == 2 and r["knob"] == "rx-usecs" and r["mode"] == "coalesce"
        assert r["p50_us_min"] <= r["p50_us"] <= r["p50_us_max"]
        assert r["p50_us_spread_pct"] >= 0
        # 40 samples: p99 and p99.9 rest on less than one sample beyond them.
        assert len(r["warnings"]) == 2 and r["warnings"][0].startswith("p99 rests on 0.4")
    assert [r["knob_value"] for r in rows] == [0, 200]
    samples = json.loads((tmp_path / "samples.json").read_text())
    assert all(len(v) == 80 for v in samples.values())  # both runs pooled for the CDF
    assert "sweep_rx-usecs_udp_stack-server.png" in doc["plots"]
    png = tmp_path / "sweep_rx-usecs_udp_stack-server.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "±" in out and "warning:" in out and "p99 rests on" in out and " -- in " in out


def test_livelock_app_work(tmp_path: Path) -> None:
    argv = [
        "livelock", "--modes", "hardirq", "--rates", "400", "--duration", "0.3",
        "--drain", "0.2", "--app-work-us", "200", "--repeat", "2", "--seed", "7",
    ]  # fmt: skip
    doc = _run(argv, tmp_path)
    (r,) = doc["summaries"]
    assert r["runs"] == 2 and r["app_work_us"] == 200 and r["setup"] == "hardirq"
    assert r["delivered_pps_min"] <= r["delivered_pps"] <= r["delivered_pps_max"]
    # The application spun 200 us of thread CPU per datagram it consumed: the stack
    # process's CPU covers at least that.
    assert r["cpu_s"] >= r["delivered"] * 200e-6 * 0.95, r


def test_bad_sweeps_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["latency", "--sweep", "rx-speed=1,2"])
    assert "KNOB=V1,V2" in capsys.readouterr().err
    args = parse_args(["latency", "--sweep", "rx-usecs=0,10", "--set", "budget=8"])
    assert run_bench(args) == 1
    assert "does not apply to coalesce" in capsys.readouterr().err
