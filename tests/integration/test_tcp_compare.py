"""SACK vs no SACK and NewReno vs CUBIC on the fault-injected wire, socket options, ICMP.

Correctness only (every byte intact, by sha256) plus checks that the mechanism compared was
really in use; the speed and retransmission figures come from ``python -m anp_async.bench.tcp_compare``
(no wall-clock assertions here).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket

import pytest

from anp_async.nic.faults import FaultConfig
from anp_async.proto import icmp
from anp_async.proto.ipv4 import build_ipv4_header
from tests.stackutil import fast_tcp, wire_stacks

N = 1024 * 1024


async def transfer(a, b, n: int, port: int) -> dict:  # type: ignore[no-untyped-def]
    """A sends ``n`` seeded bytes to B; B answers with the sha256 it computed."""
    data = random.Random(port).randbytes(n)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        h = hashlib.sha256()
        while chunk := await reader.read(1 << 20):
            h.update(chunk)
        writer.write(h.digest())
        await writer.drain()
        writer.close()

    server = await b.start_server(serve, "10.0.0.2", port)
    reader, writer = await a.open_connection("10.0.0.2", port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    digest = await reader.read(64)
    info = writer.transport.get_extra_info("stack_tcp_info")
    writer.close()
    server.close()
    assert digest == hashlib.sha256(data).digest()
    return info


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "nosack"])
@pytest.mark.parametrize("congestion", ["newreno", "cubic"])
async def test_lossy_transfer_intact(sack: bool, congestion: str) -> None:
    faults = FaultConfig(loss=0.05, seed=11)
    async with wire_stacks(
        "interrupt", faults=faults, tcp=fast_tcp(sack=sack, congestion=congestion)
    ) as (a, b):
        info = await asyncio.wait_for(transfer(a, b, N, 9200), 120)
        assert info["sack"] is sack
        assert info["congestion"] == congestion
        assert info["bytes_retrans"] > 0  # the loss really hit the transfer
        conn_stats = a.stats()["tcp"]
        assert (conn_stats.get("conn_sack_recoveries", 0) > 0) is sack


@pytest.mark.parametrize("recovery", ["rack", "sack"])
async def test_lossy_transfer_intact_rack_on_and_off(recovery: str) -> None:
    faults = FaultConfig(loss=0.05, seed=12)
    tcp = fast_tcp(rack=recovery == "rack")
    async with wire_stacks("interrupt", faults=faults, tcp=tcp) as (a, b):
        info = await asyncio.wait_for(transfer(a, b, N, 9210), 120)
        assert info["rack"] is (recovery == "rack")
        st = a.stats()["tcp"]
        assert (st.get("conn_rack_recoveries", 0) > 0) is (recovery == "rack")


async def test_ecn_marks_instead_of_loss() -> None:
    # A router marking CE instead of dropping (RFC 3168): the IPv4 ECN field carries ECT
    # out and CE back; the receiver echoes ECE, the sender halves cwnd and sends CWR,
    # and nothing is retransmitted.
    faults = FaultConfig(ce_mark=0.02, seed=13)
    async with wire_stacks("interrupt", faults=faults, tcp=fast_tcp(ecn=True)) as (a, b):
        info = await asyncio.wait_for(transfer(a, b, N, 9220), 120)
        assert info["ecn"] is True
        assert info["bytes_retrans"] == 0
        sa, sb = a.stats()["tcp"], b.stats()["tcp"]
        assert sb.get("conn_ecn_ce_rx", 0) > 0
        assert sa.get("conn_ecn_reductions", 0) > 0 and sa.get("conn_ecn_cwr_sent", 0) > 0
        assert a.nic.fault_stats["ce_marked"] > 0  # type: ignore[attr-defined]


async def test_sockopts_map_onto_the_connection() -> None:
    async with wire_stacks("interrupt") as (a, b):
        server = await b.start_server(lambda r, w: None, "10.0.0.2", 9300)
        _, writer = await a.open_connection("10.0.0.2", 9300)
        sock = writer.get_extra_info("socket")
        conn = writer.transport._conn
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION) == b"reno"
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
        assert conn.cc.name == "cubic" and conn.cfg.congestion == "cubic"
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION) == b"cubic"
        with pytest.raises(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"nosuch")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 2500)
        cfg = conn.cfg
        assert (cfg.keepalive, cfg.keepalive_idle, cfg.keepalive_interval) == (True, 30.0, 5.0)
        assert (cfg.keepalive_count, cfg.user_timeout) == (3, 2.5)
        assert a.tcp.config.keepalive is False  # the stack default is untouched
        # The engine now has a keep-alive deadline 30 s after the last segment received.
        assert conn.next_deadline() == pytest.approx(conn._last_rx + 30.0)
        writer.close()
        server.close()


async def test_icmp_error_checked_against_quoted_sequence() -> None:
    async with wire_stacks("interrupt") as (a, b):
        server = await b.start_server(lambda r, w: None, "10.0.0.2", 9400)
        _, writer = await a.open_connection("10.0.0.2", 9400)
        info = writer.transport.get_extra_info("stack_tcp_info")
        lport = writer.get_extra_info("sockname")[1]

        def quote(seq: int) -> bytes:
            tcp8 = lport.to_bytes(2, "big") + (9400).to_bytes(2, "big") + seq.to_bytes(4, "big")
            return build_ipv4_header(a.ip_b, b.ip_b, 6, 20, 1) + tcp8 + bytes(12)

        # RFC 5927 (4.1): a quoted sequence number outside SND.UNA..SND.NXT is a forgery.
        bogus = (info["snd_una"] + 1_000_000) & 0xFFFFFFFF
        b.send_ip(a.ip_b, 1, [icmp.build_dest_unreachable(icmp.PORT_UNREACH, quote(bogus))])
        await asyncio.sleep(0.05)
        assert a.tcp.counters["icmp_out_of_window"] == 1
        assert a.tcp.counters["icmp_errors"] == 0
        ok = info["snd_una"]
        b.send_ip(a.ip_b, 1, [icmp.build_dest_unreachable(icmp.PORT_UNREACH, quote(ok))])
        await asyncio.sleep(0.05)
        assert a.tcp.counters["icmp_errors"] == 1
        # A soft error for an established connection (RFC 1122 4.2.3.9): it stays open.
        assert writer.transport._conn.state.name == "ESTABLISHED"
        writer.close()
        server.close()


def test_bench_tcp_compare_tables_on_the_virtual_clock(capsys: pytest.CaptureFixture[str]) -> None:
    # Virtual time: the figures are the same on every machine and every run.
    from anp_async.bench import tcp_compare

    argv = ["--seeds", "1-2", "--short", "10x15k", "--bulk", "256k"]
    assert tcp_compare.main(argv) == 0
    first = capsys.readouterr().out
    assert tcp_compare.main(argv) == 0
    assert capsys.readouterr().out == first
    args = __import__("argparse").Namespace(
        seeds="1-2", loss=0.03, bulk_loss=0.01, rate=20e6, delay=0.01, bulk=256 << 10,
        short_n=10, short_size=15 << 10,
    )  # fmt: skip
    runs = [tcp_compare.run_one(c, s, args) for c in ("sack", "rack", "rack+ecn") for s in (1, 2)]
    summary = tcp_compare.summarize(runs, 0.02)
    # Tail losses: SACK alone waits for RTOs, RACK-TLP probes instead.
    assert summary["rack"]["short_tlp_probes"] > 0 and summary["sack"]["short_tlp_probes"] == 0
    assert summary["rack"]["short_timeouts"] < summary["sack"]["short_timeouts"]
    assert summary["rack+ecn"]["bulk_ecn_reductions"] > 0
