"""Path MTU discovery in the engine (RFC 8201 (5.2), RFC 1191 (6.4)): a Packet Too Big
lowers the connection's MSS and what is in flight goes again at once, cut to the new
size, with cwnd unchanged (a too-big drop is no congestion signal)."""

from __future__ import annotations

import random

from anp_async.proto.tcp import ACK, SYN, TcpConnection, TcpOptions, TcpSegment, TcpState
from anp_async.proto.tcp.host import TcpHost
from tests.unit.tcp_templates import ISS, LIP, LPORT, RIP, RISS, RPORT, established, plain, rseg


def _data(out: list[TcpSegment]) -> list[tuple[int, int]]:
    return [(s.seq - ISS - 1, len(s.payload)) for s in out if s.payload]


def test_packet_too_big_lowers_the_mss_and_resends_the_flight_at_once() -> None:
    c = established(syn_opts=TcpOptions(mss=1460))
    assert c.send(b"x" * 4380, 0.0) == 4380
    assert _data(c.output(0.0)) == [(0, 1460), (1460, 1460), (2920, 1460)]
    assert c.cc is not None
    cwnd = c.cc.cwnd
    # The path takes 1000 bytes behind a bare TCP header: all three were dropped.
    assert c.path_mtu_reduced(1000, 0.05)
    assert (c.snd_mss, c.seg_mss, c.cc.mss, c.cc.cwnd) == (1000, 1000, 1000, cwnd)
    out = c.output(0.05)  # no timer: at once
    assert _data(out) == [(0, 1000), (1000, 1000), (2000, 1000), (3000, 1000), (4000, 380)]
    assert c.counters["pmtu_reductions"] == 1 and c.counters["timeouts"] == 0
    # Not smaller than now: nothing changes, nothing is resent.
    assert not c.path_mtu_reduced(1000, 0.06) and not c.path_mtu_reduced(1400, 0.06)
    assert c.output(0.06) == []
    # The ACK of everything ends it; new data goes out at the new size.
    c.on_segment(rseg(RISS + 1, ISS + 1 + 4380), 0.1)
    c.send(b"y" * 1500, 0.1)
    assert _data(c.output(0.1)) == [(4380, 1000), (5380, 500)]


def test_timestamps_come_out_of_the_new_mss() -> None:
    cfg = plain(timestamps=True)
    syn = rseg(RISS, 0, SYN, options=TcpOptions(mss=1440, timestamp=(7, 0)))
    c = TcpConnection.accept_syn(cfg, LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    (synack,) = c.output(0.0)
    assert synack.options is not None and synack.options.timestamp is not None
    ack_opts = TcpOptions(timestamp=(8, synack.options.timestamp[0]))
    c.on_segment(rseg(RISS + 1, ISS + 1, ACK, options=ack_opts), 0.01)
    assert c.state is TcpState.ESTABLISHED and (c.seg_mss, c.snd_mss) == (1440, 1428)
    # IPv6's minimum MTU 1280 less 40 and 20: 1220, of which the timestamp takes 12.
    assert c.path_mtu_reduced(1220, 0.02)
    assert (c.seg_mss, c.snd_mss) == (1220, 1208)


def test_an_opening_connection_keeps_its_mss() -> None:
    c = TcpConnection.connect(plain(), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    assert c.state is TcpState.SYN_SENT
    assert not c.path_mtu_reduced(600, 0.0)


def test_the_host_takes_packet_too_big_only_for_data_in_flight() -> None:
    # RFC 5927 (4.1): a quote whose sequence number is not in flight is forged or stale.
    lip6, rip6 = bytes.fromhex("fd00" + "00" * 13 + "02"), bytes.fromhex("fd00" + "00" * 13 + "01")
    host: TcpHost[_Entry] = TcpHost(
        LIP, plain(), 1500, _Entry, secret=bytes(range(48)), rng=random.Random(1)
    )
    host.local_ip6 = lip6
    host.listen(LPORT, 4, lambda _: None)
    syn = TcpSegment(RPORT, LPORT, RISS, 0, SYN, 65535, options=TcpOptions(mss=1440))
    entry = host.input(rip6, lip6, syn, 0.0)
    assert entry is not None
    (synack,) = entry.conn.output(0.0)
    host.input(rip6, lip6, TcpSegment(RPORT, LPORT, RISS + 1, synack.seq + 1, ACK, 65535), 0.0)
    conn = entry.conn
    assert conn.state is TcpState.ESTABLISHED and conn.seg_mss == 1440
    conn.send(b"z" * 3000, 0.0)
    assert conn.output(0.0)

    def quote(seq: int) -> bytes:
        return LPORT.to_bytes(2, "big") + RPORT.to_bytes(2, "big") + seq.to_bytes(4, "big")

    una, nxt = conn.unacked_range()  # wire sequence numbers
    assert host.path_mtu_reduced(rip6, quote(nxt + 5000), 1280, 0.01) is None
    assert host.counters["icmp_out_of_window"] == 1 and conn.seg_mss == 1440
    assert host.path_mtu_reduced(rip6, quote(una), 1280, 0.01) is entry
    assert conn.seg_mss == 1280 - 40 - 20 and host.counters["icmp_packet_too_big"] == 1


class _Entry:
    def __init__(self, key: tuple[bytes, int, int], conn: TcpConnection, _listener: object) -> None:
        self.key = key
        self.conn = conn
