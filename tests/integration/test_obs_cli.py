"""``anp ss``, ``anp top``, ``anp stats --interval``, ``anp up --metrics`` and ``-v`` against
one running ``anp up`` in a namespace of its own, with the kernel's nc, ping and curl as
peers."""

from __future__ import annotations

import json
import subprocess

import pytest

from anp_async.obs.metrics import parse_text
from tests.integration.test_cli import STACK_IP, UpProcess, anp, in_ns

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def up():
    p = UpProcess("-v", "--echo", "7", "--http", "8080", "--metrics", "9100")
    held: list[subprocess.Popen] = []
    try:
        p.wait_ready()
        # Two kernel clients that hold a TCP echo connection open for the whole module.
        for _ in range(2):
            held.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", p.ns, "sh", "-c", f"sleep 60 | nc {STACK_IP} 7"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        p.held = held  # type: ignore[attr-defined]
        yield p
    finally:
        for h in held:
            h.kill()
            h.wait(5)
        p.stop()


def _wait_conns(up, n: int) -> list[dict]:
    for _ in range(50):
        r = anp("ss", "--tap", up.tap, "--json", timeout=20)
        rows = json.loads(r.stdout)
        if len(rows) >= n:
            return rows
        subprocess.run(["sleep", "0.1"])
    pytest.fail(f"never saw {n} connections: {r.stdout}")


def test_ss_lists_connections_and_listeners(up):
    rows = _wait_conns(up, 2)
    assert all(r["state"] == "ESTABLISHED" and r["local"] == f"{STACK_IP}:7" for r in rows)
    r = anp("ss", "--tap", up.tap, "-i", timeout=20)
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Netid State") and sum("ESTAB" in x for x in lines) == 2
    assert sum("cwnd:" in x for x in lines) == 2 and "rtt:" in r.stdout
    r = anp("ss", "--tap", up.tap, "-l", timeout=20)
    ports = sorted(line.split()[4] for line in r.stdout.splitlines()[1:])
    assert ports == [f"{STACK_IP}:7", f"{STACK_IP}:8080", f"{STACK_IP}:9100"], r.stdout
    r = anp("ss", "--tap", up.tap, "state", "established", "sport = :8080", timeout=20)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1  # header only
    r = anp("ss", "--tap", up.tap, "state", "napping", timeout=20)
    assert r.returncode == 2 and "bad filter" in r.stderr


def test_top_and_stats_interval_count_pings(up):
    ping = subprocess.Popen(
        ["ip", "netns", "exec", up.ns, "ping", "-c", "200", "-i", "0.02", "-W", "1", STACK_IP],
        stdout=subprocess.DEVNULL,
    )
    try:
        r = anp("top", "--tap", up.tap, "--json", "--interval", "0.3", "--count", "2", timeout=20)
        assert r.returncode == 0, r.stderr
        recs = [json.loads(x) for x in r.stdout.splitlines()]
        assert len(recs) == 2 and recs[0]["mode"] == "interrupt"
        assert any(x["frames_s"] > 10 for x in recs), recs
        assert all(x["connections"] == 2 and x["listeners"] == 3 for x in recs)
        r = anp("stats", "--tap", up.tap, "--interval", "0.3", "--count", "1", "--json")
        rec = json.loads(r.stdout)
        assert rec["deltas"].get("icmp.echo_requests", 0) > 0, rec
        r = anp("stats", "--tap", up.tap, "--interval", "0.3", "--count", "1")
        assert "icmp.echo_requests" in r.stdout and "/s" in r.stdout, r.stdout
    finally:
        ping.terminate()
        ping.wait(20)


def test_metrics_endpoint_on_the_stack_address(up):
    r = in_ns(
        up.ns,
        "curl",
        "-s",
        "-H",
        "Accept: application/openmetrics-text",
        f"http://{STACK_IP}:9100/metrics",
    )
    assert r.returncode == 0 and r.stdout.endswith("# EOF\n"), r.stdout[-300:]
    samples = parse_text(r.stdout)
    assert samples[f'anp_tcp_open_connections{{stack="{STACK_IP}"}}'] >= 3  # incl. curl's own
    assert samples[f'anp_mode_info{{stack="{STACK_IP}",mode="interrupt"}}'] == 1
    r = in_ns(
        up.ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{STACK_IP}:9100/nope"
    )
    assert r.stdout == "404"


def test_verbose_logs_mode_switches(up):
    r = up.ctl("mode", "coalesce", "--rx-usecs", "20")
    assert r.returncode == 0, r.stderr
    r = up.ctl("mode", "interrupt")
    assert r.returncode == 0
    out = up.output()
    assert "I anp_async.control: mode coalesce {" in out and "'rx_usecs': 20}" in out, out
