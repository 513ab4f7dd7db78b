"""The observability helpers on real ``Stack.stats()`` snapshots: ss rows and filters,
interval rates, the OpenMetrics text, and the logging options of every command."""

from __future__ import annotations

import asyncio
import logging

import pytest

from anp_async.cli.logs import level_from_args
from anp_async.cli.main import build_parser
from anp_async.obs.metrics import parse_text, render
from anp_async.obs.rates import deltas, flatten, is_drop, mode_rates
from anp_async.obs.ss import FilterError, format_rows, info_line, parse_filter, sockets
from tests.stackutil import wire_stacks


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except (asyncio.CancelledError, ConnectionError):
        pass  # the stacks are closing
    finally:
        writer.close()


@pytest.fixture(scope="module")
def snapshots() -> tuple[dict, dict]:
    """Stats of stack B before and after: a listener, two connections, pings, a mode switch."""

    async def run() -> tuple[dict, dict]:
        async with wire_stacks() as (a, b):
            await b.start_server(_echo, "10.0.0.2", 7)
            await b.start_server(_echo, "10.0.0.2", 80)
            udp, _ = await b.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("10.0.0.2", 53)
            )
            s0 = b.stats()
            for _ in range(3):
                await a.ping("10.0.0.2")
            conns = []
            for port in (7, 80):
                r, w = await a.open_connection("10.0.0.2", port)
                w.write(b"x" * 3000)
                await r.readexactly(3000)
                conns.append(w)
            b.set_mode("poll", budget=16)
            await a.ping("10.0.0.2")
            s1 = b.stats()
            for w in conns:
                w.close()
            udp.close()
            await asyncio.sleep(0.05)
            return s0, s1

    return asyncio.run(run())


def test_ss_rows_and_filters(snapshots):
    _, s1 = snapshots
    rows = sockets(s1)
    listen = [r for r in rows if r["state"] == "LISTEN"]
    est = [r for r in rows if r["state"] == "ESTABLISHED"]
    assert sorted(r["local"] for r in listen) == ["10.0.0.2:7", "10.0.0.2:80"]
    assert len(est) == 2 and all(r["remote"].startswith("10.0.0.1:") for r in est)
    assert [
        r["local"] for r in rows if parse_filter(["state", "established", "sport = :80"])(r)
    ] == ["10.0.0.2:80"]
    assert len([r for r in rows if parse_filter(["sport", "lt", ":80"])(r)]) == 3  # 7 twice, 53
    assert len([r for r in rows if parse_filter(["state", "listening"])(r)]) == 2
    assert all(r["send_q"] == 100 and r["recv_q"] == 0 for r in listen)  # default backlog
    (u,) = [r for r in rows if r["proto"] == "udp"]
    assert u["state"] == "UNCONN" and u["local"] == "10.0.0.2:53" and u["remote"] == "*:*"
    assert [r["local"] for r in rows if parse_filter(["udp"])(r)] == ["10.0.0.2:53"]
    assert len([r for r in rows if parse_filter(["dst", "10.0.0.1"])(r)]) == 2
    assert len([r for r in rows if parse_filter(["sport=:7", "and", "state", "connected"])(r)]) == 1
    v6 = {
        "proto": "tcp",
        "state": "ESTABLISHED",
        "local": "[fd00::2]:7",
        "remote": "[fd00::1]:5555",
    }
    assert parse_filter(["dst", "fd00::1"])(v6) and parse_filter(["dst", "[fd00::1]:5555"])(v6)
    assert parse_filter(["sport", "=", ":7"])(v6) and not parse_filter(["src", "fd00::1"])(v6)
    with pytest.raises(FilterError):
        parse_filter(["state", "sleepy"])
    with pytest.raises(FilterError):
        parse_filter(["dport", "=", ":99999"])
    text = format_rows(est, info=True, width=80)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["Netid", "State"] and "ESTAB" in lines[1]
    info = info_line(est[0])
    for word in ("rto:", "rtt:", "cwnd:", "mss:1448", "bytes_acked:", "wscale:", "sack"):
        assert word in info, info
    assert all(len(line.expandtabs()) <= 90 for line in lines)


def test_rates_survive_a_mode_switch(snapshots):
    s0, s1 = snapshots
    r = mode_rates(s0, s1, 2.0)
    assert r.mode == "poll" and r.params == "budget=16"
    # Summed over every mode: 4 pings + 2 handshakes + data, never negative.
    assert r.frames_s > 5 and r.wakeups_s >= r.frames_s / 64
    assert 1 <= r.frames_per_batch <= 64
    assert r.connections == 2 and r.listeners == 2
    d = deltas(flatten(s0), flatten(s1))
    assert d["icmp.echo_requests"] == 4
    assert d["tcp.open_connections"] == 2  # a gauge keeps its value
    assert is_drop("ip.bad_checksum") and is_drop("nic.rx_dropped")
    assert not is_drop("tcp.rx_segments") and not is_drop("mode.deliver_errors")


def test_openmetrics_text(snapshots):
    _, s1 = snapshots
    text = render(s1)
    assert text.endswith("# EOF\n")
    samples = parse_text(text)
    assert samples['anp_icmp_echo_requests_total{stack="10.0.0.2"}'] == 4
    assert samples['anp_mode_info{stack="10.0.0.2",mode="poll"}'] == 1
    assert samples['anp_tcp_open_connections{stack="10.0.0.2"}'] == 2
    assert samples['anp_tcp_listen_backlog{stack="10.0.0.2",port="80"}'] == 100
    assert not [k for k in samples if "listen_queues" in k]
    cwnd = [k for k in samples if k.startswith("anp_tcp_sock_cwnd{")]
    assert len(cwnd) == 2 and all('state="ESTABLISHED"' in k for k in cwnd)
    # Every family is declared once, before its samples; counters end in _total.
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))
    for line in text.splitlines():
        if line.startswith("# TYPE") and line.endswith(" counter"):
            fam = line.split()[2]
            assert f"{fam}_total{{" in text
    assert not render(s1, openmetrics=False).rstrip().endswith("# EOF")


@pytest.mark.parametrize(
    "argv,level",
    [
        (["stats"], logging.WARNING),
        (["stats", "-v"], logging.INFO),
        (["-vv", "stats"], logging.DEBUG),
        (["up", "--log-level", "error"], logging.ERROR),
        (["ctl", "mode", "-v"], logging.INFO),
        (["bench", "latency", "-vv"], logging.DEBUG),
    ],
)
def test_log_options_on_every_command(argv, level):
    args = build_parser().parse_args(argv)
    assert level_from_args(args) == level


def test_every_command_takes_v():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        opts = {o for a in p._actions for o in a.option_strings}
        assert {"-v", "--log-level"} <= opts, name


def test_top_screen_renders(snapshots):
    import io

    from rich.console import Console

    from anp_async.cli.top import _render

    s0, s1 = snapshots
    r = mode_rates(s0, s1, 1.0)
    out = io.StringIO()
    Console(file=out, width=160).print(_render(r, {"poll budget=16": r}, "anptap0"))
    text = out.getvalue()
    assert "anp top" in text and "mode poll" in text and "frames/batch" in text
    assert "per receive mode" in text and "budget=16" in text


def test_demo_json_on_the_wire(capsys):
    import json

    from anp_async.cli import logs
    from anp_async.cli.main import main

    pkg = logging.getLogger("anp_async")
    handlers, level = list(pkg.handlers), pkg.level
    try:
        assert main(["demo", "--wire", "--json"]) == 0
        # main() installs its stderr handler once per process (an earlier test may have):
        ours = [h for h in pkg.handlers if getattr(h, logs._HANDLER_FLAG, False)]
        assert len(ours) == 1 and pkg.propagate
    finally:
        pkg.handlers[:] = handlers
        pkg.setLevel(level)
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["mode"] for r in recs] == ["interrupt", "coalesce", "poll", "adaptive"]
    assert all(r["ok"] and r["ping_received"] == r["ping_sent"] for r in recs)
