"""Engine bugs the deterministic simulator found (anp sim), each as an exact-segment test."""

from __future__ import annotations

from anp_async.proto.tcp import TcpConfig, TcpConnection, TcpState
from anp_async.proto.tcp.segment import ACK, SYN

IP_A = bytes([10, 0, 0, 1])
IP_B = bytes([10, 0, 0, 2])
ISS_A, ISS_B = 576728116, 3296523053


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
