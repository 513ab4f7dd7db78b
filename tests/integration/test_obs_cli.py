"""``anp ss``, ``anp top``, ``anp stats --interval``, ``anp up --metrics`` and ``-v`` against
one running ``anp up`` in a namespace of its own, with the kernel's nc, ping and curl as
peers."""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from anp_async.nic.netns import Netns
from anp_async.obs.metrics import parse_text
from tests.integration.test_cli import ANP, ENV, STACK_IP, UpProcess, anp, in_ns

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
    socks = sorted((line.split()[0], line.split()[4]) for line in r.stdout.splitlines()[1:])
    assert socks == [
        ("tcp", f"{STACK_IP}:7"), ("tcp", f"{STACK_IP}:8080"), ("tcp", f"{STACK_IP}:9100"),
        ("udp", f"{STACK_IP}:7"),
    ], r.stdout  # fmt: skip
    r = anp("ss", "--tap", up.tap, "-u", "-a", timeout=20)
    assert [line.split()[:2] for line in r.stdout.splitlines()[1:]] == [["udp", "UNCONN"]]
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


def test_trace_attaches_to_the_running_stack(up):
    tr = subprocess.Popen(
        [*ANP, "trace", "--tap", up.tap, "--count", "1", "--filter", "icmp"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        subprocess.run(["sleep", "0.7"])
        in_ns(up.ns, "ping", "-c", "3", "-i", "0.3", "-W", "1", STACK_IP)
        out, err = tr.communicate(timeout=20)
    finally:
        tr.kill()
    print(out)
    assert tr.returncode == 0, err
    layers = [line.split()[2] for line in out.splitlines() if line.split()[1].startswith("#")]
    assert layers == ["wake", "eth", "ip", "icmp", "tx"], out
    assert "echo-request" in out and "echo-reply" in out and "rule: RFC 792" in out
    r = anp("trace", "--tap", up.tap, "--filter", "port x", timeout=20)
    assert r.returncode == 2 and "the stack refused" in r.stderr and "port" in r.stderr


def test_trace_json_follows_an_http_request(up):
    tr = subprocess.Popen(
        [*ANP, "trace", "--tap", up.tap, "--json", "--filter", "tcp and port 8080"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        subprocess.run(["sleep", "0.7"])
        r = in_ns(up.ns, "curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                  f"http://{STACK_IP}:8080/pattern/1000")  # fmt: skip
        assert r.stdout == "1000", r.stdout + r.stderr
        subprocess.run(["sleep", "0.5"])
    finally:
        tr.terminate()
        out, _ = tr.communicate(timeout=20)
    recs = [json.loads(line) for line in out.splitlines()]
    states = [tuple(x["state"]) for x in recs if x["layer"] == "tcp"]
    assert states[0] == ("LISTEN", "SYN-RECEIVED") and ("ESTABLISHED", "CLOSE-WAIT") in states
    app = " ".join(x["text"] for x in recs if x["layer"] == "app")
    assert "connection_made" in app and "data_received" in app and "connection_lost" in app
    assert all(
        x.get("dport") == 8080 or x.get("sport") == 8080 for x in recs if x["layer"] == "tcp"
    )


def test_ping_with_trace_option_and_json():
    ns = f"anp-{secrets.token_hex(4)}"
    tap = "anpt" + secrets.token_hex(3)
    try:
        r = anp("ping", "10.0.0.1", "-c", "1", "--netns", ns, "--tap", tap, "--trace", timeout=30)
        j = anp("ping", "10.0.0.1", "-c", "2", "-i", "0.1", "--json", "--netns", ns + "j",
                "--tap", tap, timeout=30)  # fmt: skip
    finally:
        for name in (ns, ns + "j"):
            if Netns(name).exists():
                Netns(name).delete()
    recs = [json.loads(line) for line in j.stdout.splitlines()]
    assert [x.get("seq") for x in recs[:2]] == [1, 2] and all(x["rtt_ms"] > 0 for x in recs[:2])
    assert recs[2]["transmitted"] == recs[2]["received"] == 2 and recs[2]["mode"] == "interrupt"
    assert r.returncode == 0, r.stderr
    assert "ARP who-has 10.0.0.1 tell 10.0.0.2" in r.stderr
    assert "echo-reply" in r.stderr and "stack.ping() returns" in r.stderr
    assert "1 received" in r.stdout
