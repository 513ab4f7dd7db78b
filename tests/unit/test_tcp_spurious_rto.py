"""Spurious retransmission timeouts: Eifel detection (RFC 3522) and response (RFC 4015).

The connection is the passive end of a handshake with timestamps and SACK (RTT 10 ms, so
RTO = 200 ms); data segments are 1000 bytes (``seg_no(i)`` is the wire sequence number
of segment ``i``). A timeout fires, then an ACK arrives that echoes either an original
transmission's timestamp (the timeout was spurious: undone) or the retransmission's (it
was not: go-back-N goes on).
"""

from __future__ import annotations

import pytest

from anp_async.proto.tcp import ACK, SYN, TcpConfig, TcpConnection, TcpOptions, TcpSegment
from anp_async.proto.tcp.congestion import INITIAL_SSTHRESH, Cubic
from anp_async.proto.tcp.segment import ECE

LIP = bytes([10, 0, 0, 2])
RIP = bytes([10, 0, 0, 1])
LPORT, RPORT = 80, 49500
ISS, RISS = 1000, 5000
M = 0xFFFFFFFF
MSS = 1000
PEER_TS = 777


def cfg(**kw: object) -> TcpConfig:
    base: dict[str, object] = dict(
        timestamps=True, sack=True, window_scale=False, mss=MSS + 12, rto_min=0.2
    )
    base.update(kw)
    return TcpConfig(**base)  # type: ignore[arg-type]


def rseg(ack: int, tsecr: int, flags: int = ACK, sack: tuple = ()) -> TcpSegment:
    blocks = tuple((a & M, b & M) for a, b in sack)
    opts = TcpOptions(timestamp=(PEER_TS, tsecr), sack_blocks=blocks)
    return TcpSegment(RPORT, LPORT, (RISS + 1) & M, ack & M, flags, 65535, b"", opts)


def established(c: TcpConfig | None = None) -> TcpConnection:
    syn_opts = TcpOptions(mss=MSS + 12, sack_permitted=True, timestamp=(PEER_TS, 0))
    syn = TcpSegment(RPORT, LPORT, RISS, 0, SYN, 65535, b"", syn_opts)
    conn = TcpConnection.accept_syn(c or cfg(), LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    (syn_ack,) = conn.output(0.0)
    assert syn_ack.options is not None and syn_ack.options.timestamp is not None
    conn.on_segment(rseg(ISS + 1, syn_ack.options.timestamp[0]), 0.01)
    conn.take_events()
    assert conn.snd_mss == MSS and conn.rtt.rto == pytest.approx(0.2)
    return conn


def seg_no(i: int) -> int:
    return ISS + 1 + i * MSS


def sent(out: list[TcpSegment]) -> list[int]:
    return [(s.seq - ISS - 1) // MSS for s in out if s.payload]


def tsval(out: list[TcpSegment]) -> int:
    opts = out[0].options
    assert opts is not None and opts.timestamp is not None
    return opts.timestamp[0]


def timeout_after_four(c: TcpConnection) -> tuple[int, int]:
    """Four segments at t=1.0; the loss probe (PTO = 2 SRTT) at 1.02 resends segment 3,
    the RTO at 1.22 segment 0: (original TSval, retransmission TSval)."""
    c.send(b"a" * 4 * MSS, 1.0)
    first = c.output(1.0)
    assert sent(first) == [0, 1, 2, 3]
    assert c.next_deadline() == pytest.approx(1.02)
    c.on_timer(1.02)
    assert sent(c.output(1.02)) == [3]
    assert c.next_deadline() == pytest.approx(1.22)
    c.on_timer(1.22)
    rtx = c.output(1.22)
    assert sent(rtx) == [0] and c.counters["timeouts"] == 1
    assert c.cc is not None and c.cc.cwnd == MSS
    return tsval(first), tsval(rtx)


def test_ack_of_the_original_undoes_the_timeout() -> None:
    c = established()
    assert c.cc is not None
    orig, _ = timeout_after_four(c)
    srtt, rttvar = c.rtt.srtt, c.rtt.rttvar
    assert srtt is not None and rttvar is not None
    # The ACK of all four echoes the original transmission's TSval (RFC 3522): spurious.
    c.on_segment(rseg(seg_no(4), orig), 1.3)
    assert c.counters["spurious_rto"] == 1
    assert c.snd_nxt == c.snd_max
    # RFC 4015 (4): ssthresh = pipe_prev (max(FlightSize, ssthresh) before the timeout),
    # cwnd = FlightSize + min(bytes_acked, IW) = 0 + 4000, then this ACK's slow start.
    assert c.cc.ssthresh == INITIAL_SSTHRESH
    assert c.cc.cwnd == 4 * MSS + 2 * MSS
    # The 300 ms the original took is one more RTT sample (RFC 6298 (2.3)); the backoff
    # ends.
    srtt2 = 7 / 8 * srtt + 0.3 / 8
    rttvar2 = 3 / 4 * rttvar + abs(srtt - 0.3) / 4
    assert c.rtt.srtt == pytest.approx(srtt2)
    assert c.rtt.rto == pytest.approx(max(0.2, srtt2 + 4 * rttvar2))
    assert c.rtt.backoff_count == 0


def test_partial_ack_of_the_original_resumes_at_snd_max_without_go_back_n() -> None:
    c = established()
    assert c.cc is not None
    orig, _ = timeout_after_four(c)
    c.send(b"b" * 2 * MSS, 1.25)
    assert sent(c.output(1.25)) == []  # cwnd = 1 SMSS, one retransmission out
    # The delayed ACK of the originals covers segments 0-1 only: still spurious.
    c.on_segment(rseg(seg_no(2), orig), 1.3)
    assert c.counters["spurious_rto"] == 1
    # No go-back-N over 2-3 (in flight, not lost): the new segments 4-5 go next, within
    # cwnd = FlightSize (2000) + min(2000, IW) + slow start (2000).
    assert c.cc.cwnd == 6 * MSS
    assert sent(c.output(1.3)) == [4, 5]
    rack = c.recovery.rack
    assert rack is not None and rack.lost_bytes == 0
    assert c.counters["retransmits"] == 2  # the probe and the timeout's


def test_ack_of_the_retransmission_keeps_the_timeout() -> None:
    c = established()
    assert c.cc is not None
    _, rtx = timeout_after_four(c)
    # The echo is the retransmission's: the original was lost; go-back-N goes on.
    c.on_segment(rseg(seg_no(1), rtx), 1.3)
    assert c.counters["spurious_rto"] == 0
    assert c.recovery.undo is None
    assert c.cc.cwnd == 2 * MSS  # slow start from 1 SMSS
    assert sent(c.output(1.3)) == [1, 2]


def test_only_the_first_ack_decides() -> None:
    c = established()
    orig, rtx = timeout_after_four(c)
    c.on_segment(rseg(seg_no(1), rtx), 1.3)
    # A later ACK echoing an older timestamp (reordered) changes nothing any more.
    c.on_segment(rseg(seg_no(2), orig), 1.31)
    assert c.counters["spurious_rto"] == 0


def test_a_second_timeout_keeps_the_first_retransmission_ts() -> None:
    c = established()
    assert c.cc is not None
    orig, _ = timeout_after_four(c)
    t = c.next_deadline()
    assert t == pytest.approx(1.62)  # backed off
    c.on_timer(t)
    assert sent(c.output(t)) == [0]
    assert c.counters["timeouts"] == 2
    srtt, samples = c.rtt.srtt, c.rtt.samples
    c.on_segment(rseg(seg_no(4), orig), 1.7)
    assert c.counters["spurious_rto"] == 1
    assert c.cc.ssthresh == INITIAL_SSTHRESH  # the state from before the first timeout
    # After two timeouts the echo's 0.7 s age is mostly our own backoff wait, not the
    # original's round trip: no RTT sample (the backoff ends at the next valid one).
    assert c.rtt.srtt == srtt and c.rtt.samples == samples
    assert c.rtt.backoff_count == 2


def test_other_congestion_signal_since_keeps_the_window() -> None:
    c = established(cfg(ecn=True, ecn_accept=True))
    assert c.cc is not None
    orig, _ = timeout_after_four(c)
    loss_events = c.cc.loss_events
    c.cc.on_loss_fast(4 * MSS, 1.25)  # as an ECN-Echo would
    assert c.cc.loss_events == loss_events + 1
    ssthresh = c.cc.ssthresh
    c.on_segment(rseg(seg_no(2), orig), 1.3)
    assert c.counters["spurious_rto"] == 1
    assert c.snd_nxt == c.snd_max  # no go-back-N still
    assert c.cc.ssthresh == ssthresh  # the window stays reduced
    assert ECE  # (the flag the RFC names for this case)


def test_cubic_state_comes_back() -> None:
    c = established(cfg(congestion="cubic"))
    cc = c.cc
    assert isinstance(cc, Cubic)
    cc.w_max, cc.k, cc.cwnd_prior = 30.0, 2.5, 25.0
    orig, _ = timeout_after_four(c)
    assert cc.epoch_start is None
    c.on_segment(rseg(seg_no(4), orig), 1.3)
    assert c.counters["spurious_rto"] == 1
    # RFC 9438 (4.9): the CUBIC variables as before the timeout.
    assert (cc.w_max, cc.k, cc.cwnd_prior) == (30.0, 2.5, 25.0)
    assert not cc._after_timeout
    assert cc.timeouts == 1  # the event itself stays counted


def test_no_timestamps_no_undo() -> None:
    c = established()
    c.ts_ok = False  # (as if negotiated without: no echo to tell the copies apart)
    c.send(b"a" * 2 * MSS, 1.0)
    c.output(1.0)
    c.on_timer(c.next_deadline() or 0.0)
    c.on_timer(c.next_deadline() or 0.0)
    assert c.counters["timeouts"] == 1
    assert c.recovery.undo is None
