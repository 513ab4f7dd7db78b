"""Engine bugs the deterministic simulator found (anp sim), each as an exact-segment test."""

from __future__ import annotations

from dataclasses import dataclass

from anp_async.proto.tcp import TcpConfig, TcpConnection, TcpSegment, TcpState
from anp_async.proto.tcp.host import Key, TcpHost
from anp_async.proto.tcp.segment import ACK, RST, SYN

IP_A = bytes([10, 0, 0, 1])
IP_B = bytes([10, 0, 0, 2])
ISS_A, ISS_B = 576728116, 3296523053


@dataclass(eq=False)
class _Entry:
    key: Key
    conn: TcpConnection


def test_simultaneous_open_ack_of_first_syn_before_the_syn_ack_is_resent() -> None:
    """anp sim --seed 101: in a simultaneous open the engine rewinds SND.NXT to send its SYN
    again as a SYN-ACK; when the peer's SYN-ACK (acknowledging the first SYN) is processed
    in the same receive batch, before output() ran, SND.UNA passed SND.NXT and the next
    output() raised IndexError on the send buffer."""
    cfg = TcpConfig()
    a = TcpConnection.connect(cfg, IP_A, 40001, IP_B, 40002, ISS_A, 0.0)
    b = TcpConnection.connect(cfg, IP_B, 40002, IP_A, 40001, ISS_B, 0.0)
    (syn_a,) = a.output(0.0)
    (syn_b,) = b.output(0.0)
    assert syn_a.flags == SYN and syn_b.flags == SYN
    # The SYNs cross: each side answers with SYN-ACK (RFC 9293 3.10.7.3, simultaneous open).
    a.on_segment(syn_b, 0.001)
    (syn_ack_a,) = a.output(0.001)
    assert syn_ack_a.flags == SYN | ACK and syn_ack_a.ack == (ISS_B + 1) & 0xFFFFFFFF
    # B takes A's SYN and, in the same batch, A's SYN-ACK: no output() in between.
    b.on_segment(syn_a, 0.002)
    b.on_segment(syn_ack_a, 0.002)
    assert b.state is TcpState.ESTABLISHED
    assert b.send(b"x" * 3000, 0.002) == 3000
    out = b.output(0.002)  # raised IndexError("send buffer range out of bounds")
    data = [s for s in out if s.payload]
    assert data and data[0].seq == (ISS_B + 1) & 0xFFFFFFFF
    assert sum(len(s.payload) for s in data) <= 3000


def test_segment_to_a_connection_closed_earlier_in_the_batch_gets_rst() -> None:
    """anp sim --seed 233: a RST closed the connection; in the same receive batch (before the
    entry left the table) the peer's ACK arrived and was dropped as "dropped_closed"
    instead of answered with RST, so the peer's side stayed ESTABLISHED for ever."""
    host = TcpHost(IP_A, TcpConfig(), 1500, _Entry, secret=bytes(range(48)))
    conn = host.connect(IP_B, 5009, 50816, 0.0)
    host.add(_Entry((IP_B, 5009, 50816), conn))
    (syn,) = conn.output(0.0)
    conn.on_segment(TcpSegment(5009, 50816, 1000, syn.seq + 1, SYN | ACK, 65535), 0.01)
    assert conn.state is TcpState.ESTABLISHED
    conn.on_segment(TcpSegment(5009, 50816, 1001, 0, RST, 0), 0.02)
    assert conn.state is TcpState.CLOSED
    # Still in the table (the batch is not flushed yet): the next segment meets it.
    ack = TcpSegment(5009, 50816, 1001, syn.seq + 1, ACK, 65535)
    assert host.input(IP_B, IP_A, ack, 0.02) is None
    assert host.take_outbox() == [(IP_B, TcpSegment(50816, 5009, syn.seq + 1, 0, RST, 0))]
