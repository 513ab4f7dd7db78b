"""The host's TCP rules (proto/tcp/host.py), sans-I/O: segments in at chosen times, exact
replies out. SYN cookies through the host are in test_tcp_syncookies.py."""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass

import pytest

from anp_async.proto.tcp import ACK, FIN, RST, SYN, TcpConnection, TcpOptions, TcpSegment
from anp_async.proto.tcp.connection import TcpState
from anp_async.proto.tcp.host import EPHEMERAL_PORTS, Key, Listener, TcpHost, rst_reply
from tests.unit.tcp_templates import LIP, LPORT, RIP, RPORT, plain

M = 0xFFFFFFFF
BCAST = bytes([10, 0, 0, 255])


@dataclass(eq=False)
class Entry:
    """The smallest table entry: what the asyncio layer's TcpEndpoint is to the host."""

    key: Key
    conn: TcpConnection
    listener: Listener | None = None


def new_host(**cfg) -> TcpHost[Entry]:
    return TcpHost(LIP, plain(**cfg), 1500, Entry, secret=bytes(range(48)), rng=random.Random(1))


def syn(rport: int = RPORT, seq: int = 5000, opts: TcpOptions | None = None) -> TcpSegment:
    return TcpSegment(rport, LPORT, seq, 0, SYN, 65535, options=opts or TcpOptions(mss=1460))


def test_rst_reply_rules() -> None:
    # RFC 9293 3.10.7.1: ACK set -> <SEQ=SEG.ACK><CTL=RST>; else <ACK=SEG.SEQ+SEG.LEN><RST,ACK>.
    assert rst_reply(TcpSegment(1, 2, 10, 77, ACK, 100, b"xyz")) == TcpSegment(2, 1, 77, 0, RST, 0)
    assert rst_reply(TcpSegment(1, 2, M, 0, SYN | FIN, 100, b"ab")) == TcpSegment(
        2, 1, 0, 3, RST | ACK, 0
    )
    assert rst_reply(TcpSegment(1, 2, 10, 0, RST, 0)) is None


def test_closed_port_gets_rst_and_broadcast_is_dropped() -> None:
    host = new_host()
    assert host.input(RIP, LIP, syn(), 0.0) is None
    assert host.take_outbox() == [(RIP, TcpSegment(LPORT, RPORT, 0, 5001, RST | ACK, 0))]
    assert host.input(RIP, BCAST, syn(), 0.0) is None
    assert host.take_outbox() == []
    assert host.counters["to_closed_port"] == 1 and host.counters["to_broadcast_dropped"] == 1


def test_listen_input_rst_ack_syn() -> None:
    host = new_host()
    host.listen(LPORT, 4, lambda _: None)
    # RFC 9293 3.10.7.2: a RST is dropped, an ACK answered with a RST, a SYN opens.
    assert host.input(RIP, LIP, TcpSegment(RPORT, LPORT, 1, 0, RST, 0), 0.0) is None
    assert host.input(RIP, LIP, TcpSegment(RPORT, LPORT, 1, 99, ACK, 0), 0.0) is None
    assert host.take_outbox() == [(RIP, TcpSegment(LPORT, RPORT, 99, 0, RST, 0))]
    entry = host.input(RIP, LIP, syn(), 0.0)
    assert entry is not None and entry.key == (RIP, RPORT, LPORT)
    assert entry.conn.state is TcpState.SYN_RECEIVED
    [listener] = host.listeners[LPORT]
    assert listener.half_open == 1 and host.conns[entry.key] is entry
    assert [host.counters[k] for k in ("listen_rst_dropped", "listen_ack_reset")] == [1, 1]
    # The next segment of that 4-tuple goes to the connection, not the listener.
    assert host.input(RIP, LIP, TcpSegment(RPORT, LPORT, 5001, 0, ACK, 0), 0.1) is entry


def test_a_listener_of_one_family_is_a_closed_port_to_the_other() -> None:
    # An AF_INET socket hears IPv4 only, an IPV6_V6ONLY one IPv6 only: a SYN of the other
    # family meets a closed port (RST at once), as on Linux -- not a handshake and a RST.
    host = new_host()
    lip6, rip6 = bytes.fromhex("fd00" + "00" * 13 + "02"), bytes.fromhex("fd00" + "00" * 13 + "01")
    host.local_ip6 = lip6
    host.listen(LPORT, 4, lambda _: None, v6=False)
    assert host.input(rip6, lip6, syn(), 0.0) is None
    assert host.take_outbox() == [(rip6, TcpSegment(LPORT, RPORT, 0, 5001, RST | ACK, 0))]
    assert host.counters["listen_other_family"] == 1 and host.counters["to_closed_port"] == 1
    assert host.input(RIP, LIP, syn(), 0.0) is not None  # IPv4: SYN-ACK
    assert host.take_outbox() == []
    host.unlisten(host.listeners[LPORT][0])
    host.listen(LPORT, 4, lambda _: None, v4=False)
    assert host.input(RIP, LIP, syn(RPORT + 1), 0.0) is None
    assert host.take_outbox() == [(RIP, TcpSegment(LPORT, RPORT + 1, 0, 5001, RST | ACK, 0))]
    assert host.input(rip6, lip6, syn(RPORT + 2), 0.0) is not None


def test_an_ipv4_and_an_ipv6_only_listener_share_a_port() -> None:
    # A dual-stack server's two sockets (AF_INET on 0.0.0.0 and IPV6_V6ONLY on ::) listen
    # on one port, as on Linux: each family's SYN reaches its own listener. A listener
    # that hears both families clashes with either (EADDRINUSE), as AF_INET6 without
    # IPV6_V6ONLY does on Linux.
    host = new_host()
    lip6, rip6 = bytes.fromhex("fd00" + "00" * 13 + "02"), bytes.fromhex("fd00" + "00" * 13 + "01")
    host.local_ip6 = lip6
    got4: list[object] = []
    got6: list[object] = []
    l4 = host.listen(LPORT, 4, got4.append, v6=False)
    with pytest.raises(OSError) as e:
        host.listen(LPORT, 4, lambda _: None)  # both families: IPv4 is taken
    assert e.value.errno == errno.EADDRINUSE
    l6 = host.listen(LPORT, 4, got6.append, v4=False)
    [a, b] = host.listeners[LPORT]
    assert a is l4 and b is l6 and host.listening(LPORT)
    with pytest.raises(OSError):
        host.listen(LPORT, 4, lambda _: None, v4=False)  # a second IPv6-only one
    e4 = host.input(RIP, LIP, syn(RPORT), 0.0)
    e6 = host.input(rip6, lip6, syn(RPORT + 1), 0.0)
    assert e4 is not None and e6 is not None and host.take_outbox() == []
    assert (l4.half_open, l6.half_open) == (1, 1)
    assert host.counters["listen_other_family"] == 0
    # One closes: the other family's port is closed again, this one still listens.
    host.unlisten(l4)
    [only] = host.listeners[LPORT]
    assert only is l6
    assert host.input(RIP, LIP, syn(RPORT + 2), 0.0) is None
    assert host.take_outbox() == [(RIP, TcpSegment(LPORT, RPORT + 2, 0, 5001, RST | ACK, 0))]
    assert host.input(rip6, lip6, syn(RPORT + 3), 0.0) is not None
    host.unlisten(l6)
    assert not host.listening(LPORT) and host.listeners == {}


def test_reuseport_listeners_share_a_port_each_flow_reaching_one() -> None:
    # SO_REUSEPORT: listeners that all set it share a port (a group of worker processes),
    # each SYN reaching the one its flow's hash picks; one without it clashes.
    host = new_host()
    a = host.listen(LPORT, 64, lambda _: None, reuseport=True)
    with pytest.raises(OSError) as e:
        host.listen(LPORT, 64, lambda _: None)
    assert e.value.errno == errno.EADDRINUSE
    b = host.listen(LPORT, 64, lambda _: None, reuseport=True)
    entries = [host.input(RIP, LIP, syn(RPORT + i), 0.0) for i in range(40)]
    assert all(e is not None for e in entries) and host.take_outbox() == []
    picked = [e.listener for e in entries if e is not None]
    assert picked.count(a) == a.half_open > 0 and picked.count(b) == b.half_open > 0
    # The pick is the flow's: the same source port always reaches the same listener.
    for i, listener in enumerate(picked):
        assert host.listener_for(LPORT, RIP, RPORT + i) is listener
    # One leaves the group: every new flow reaches the other.
    host.unlisten(a)
    assert all(host.listener_for(LPORT, RIP, RPORT + i) is b for i in range(40))
    with pytest.raises(OSError):
        host.listen(LPORT, 64, lambda _: None)  # b still holds it for the group


def test_a_cookie_ack_reaches_the_reuseport_listener_that_sent_the_cookie() -> None:
    host = new_host()
    got: dict[int, list[object]] = {0: [], 1: []}
    ls = [host.listen(LPORT, 1, got[i].append, reuseport=True) for i in (0, 1)]
    # Fill both SYN queues (backlog 1 holds 2), then the next SYNs get cookies.
    port = RPORT
    while min(x.half_open for x in ls) < 2:
        host.input(RIP, LIP, syn(port), 0.0)
        port += 1
    host.take_outbox()
    cookie_port = port
    assert host.input(RIP, LIP, syn(cookie_port, seq=9000), 0.0) is None
    [(_, synack)] = host.take_outbox()
    assert host.counters["syncookies_sent"] == 1
    ack = TcpSegment(cookie_port, LPORT, 9001, (synack.seq + 1) & M, ACK, 65535)
    entry = host.input(RIP, LIP, ack, 0.1)
    assert entry is not None and entry.conn.state is TcpState.ESTABLISHED
    assert entry.listener is host.listener_for(LPORT, RIP, cookie_port)


def test_full_backlog_drops_syn_without_cookies() -> None:
    host = new_host(syncookies=False)
    host.listen(LPORT, 1, lambda _: None)
    # Like Linux, the SYN queue holds backlog + 1 half-open connections.
    assert host.input(RIP, LIP, syn(RPORT), 0.0) is not None
    assert host.input(RIP, LIP, syn(RPORT + 1), 0.0) is not None
    assert host.input(RIP, LIP, syn(RPORT + 2), 0.0) is None
    assert host.counters["listen_overflow"] == 1


def test_stray_ack_after_cookies_is_reset_not_opened() -> None:
    host = new_host()
    host.listen(LPORT, 0, lambda _: None)  # (a backlog below 1 counts as 1)
    host.input(RIP, LIP, syn(RPORT), 0.0)
    host.input(RIP, LIP, syn(RPORT + 1), 0.0)
    host.input(RIP, LIP, syn(RPORT + 2), 0.0)  # cookie SYN-ACK
    assert host.counters["syncookies_sent"] == 1
    host.take_outbox()
    bad = TcpSegment(RPORT + 2, LPORT, 5001, 12345, ACK, 1000)
    assert host.input(RIP, LIP, bad, 0.1) is None
    assert host.counters["syncookies_failed"] == 1
    assert host.take_outbox() == [(RIP, TcpSegment(LPORT, RPORT + 2, 12345, 0, RST, 0))]


def test_retransmitted_syn_after_a_cookie_gets_the_cookie_iss() -> None:
    # SYN X is answered with a cookie (the queue is full); the queue then drains; X's SYN
    # comes again (its SYN-ACK was slow) and finds room: the half-open connection answers
    # with the cookie as ISS, so the client's ACK of either SYN-ACK opens the connection.
    host = new_host()
    host.listen(LPORT, 1, lambda _: None)
    a = host.input(RIP, LIP, syn(RPORT + 1), 0.0)
    assert a is not None and host.input(RIP, LIP, syn(RPORT + 2), 0.0) is not None
    assert host.input(RIP, LIP, syn(RPORT, seq=7000), 0.0) is None
    [(_, cookie_synack)] = host.take_outbox()
    host.listeners[LPORT][0].half_open -= 1  # (the I/O layer does this when A completes)
    x = host.input(RIP, LIP, syn(RPORT, seq=7000), 1.0)  # the SYN retransmitted
    assert x is not None and x.conn.state is TcpState.SYN_RECEIVED
    [synack] = x.conn.output(1.0)
    assert synack.seq == cookie_synack.seq and synack.flags == SYN | ACK
    ack = TcpSegment(RPORT, LPORT, 7001, (cookie_synack.seq + 1) & M, ACK, 65535)
    assert host.input(RIP, LIP, ack, 1.1) is x
    assert x.conn.state is TcpState.ESTABLISHED and x.conn.output(1.1) == []
    assert host.counters["syn_iss_from_cookie"] == 1


def test_time_wait_reopened_by_new_syn() -> None:
    host = new_host()
    host.listen(LPORT, 4, lambda _: None)
    old = host.input(RIP, LIP, syn(seq=5000), 0.0)
    assert old is not None
    old.conn.state = TcpState.TIME_WAIT  # as if it had closed; rcv_nxt is 5001
    new = host.input(RIP, LIP, syn(seq=900000), 1.0)
    assert new is not None and new is not old
    assert host.take_retired() == [old] and host.conns[new.key] is new
    assert host.counters["time_wait_reopened"] == 1


def test_icmp_error_sequence_check() -> None:
    host = new_host()
    conn = host.connect(RIP, LPORT, 40000, 0.0)
    entry = Entry((RIP, LPORT, 40000), conn)
    host.add(entry)
    (syn_out,) = conn.output(0.0)
    quote = (40000).to_bytes(2, "big") + LPORT.to_bytes(2, "big")
    # RFC 5927 (4.1): a quoted sequence number outside SND.UNA..SND.NXT is ignored.
    outside = quote + ((syn_out.seq + 100) & M).to_bytes(4, "big")
    assert host.icmp_error(3, 3, RIP, outside) is None
    assert host.counters["icmp_out_of_window"] == 1
    inside = quote + syn_out.seq.to_bytes(4, "big")
    assert host.icmp_error(3, 1, RIP, inside) is None  # host unreachable: soft
    assert host.icmp_error(3, 3, RIP, inside) is entry  # port unreachable: hard
    assert host.icmp_error(3, 3, bytes([10, 0, 0, 9]), inside) is None
    assert host.counters["icmp_errors"] == 2 and host.counters["icmp_unmatched"] == 1


def test_pick_port_avoids_used_tuples_and_listeners() -> None:
    host = new_host()
    host.listen(EPHEMERAL_PORTS[0], 1, lambda _: None)
    for p in EPHEMERAL_PORTS[1:]:
        host.add(Entry((RIP, 80, p), host.connect(RIP, 80, p, 0.0)))
    with pytest.raises(OSError):
        host.pick_port(RIP, 80)
    assert host.pick_port(RIP, 81) in EPHEMERAL_PORTS
    assert not host.port_free(RIP, 80, EPHEMERAL_PORTS[5])
    with pytest.raises(OSError):
        host.listen(EPHEMERAL_PORTS[0], 1, lambda _: None)
