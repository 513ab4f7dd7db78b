"""RACK-TLP (RFC 8985): crafted ACKs at chosen times, exact retransmissions and deadlines.

The connection is the passive end of a SACK handshake (RTT 10 ms); data segments are 1000
bytes (``seg_no(i)`` is the wire sequence number of segment ``i``).
"""

from __future__ import annotations

import pytest

from anp_async.proto.tcp import ACK, SYN, TcpConfig, TcpConnection, TcpOptions, TcpSegment
from anp_async.proto.tcp.rack import TLP_WCDELACKT, Rack
from anp_async.proto.tcp.sack import SackScoreboard
from anp_async.proto.tcp.segment import CE, CWR, ECE, ECT_0, NOT_ECT

LIP = bytes([10, 0, 0, 2])
RIP = bytes([10, 0, 0, 1])
LPORT, RPORT = 80, 49500
ISS, RISS = 1000, 5000
M = 0xFFFFFFFF
MSS = 1000


def cfg(**kw) -> TcpConfig:
    base = dict(timestamps=False, sack=True, window_scale=False, mss=MSS, rto_min=0.2)
    base.update(kw)
    return TcpConfig(**base)


def rseg(ack: int, sack=(), dsack=None) -> TcpSegment:
    blocks = ([dsack] if dsack else []) + list(sack)
    opts = TcpOptions(sack_blocks=tuple((a & M, b & M) for a, b in blocks)) if blocks else None
    return TcpSegment(RPORT, LPORT, (RISS + 1) & M, ack & M, ACK, 65535, b"", opts)


def established(c: TcpConfig | None = None) -> TcpConnection:
    syn = TcpSegment(RPORT, LPORT, RISS, 0, SYN, 65535, b"", TcpOptions(mss=MSS, sack_permitted=True))
    conn = TcpConnection.accept_syn(c or cfg(), LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    conn.output(0.0)
    conn.on_segment(rseg(ISS + 1), 0.01)
    conn.take_events()
    return conn


def seg_no(i: int) -> int:
    return ISS + 1 + i * MSS


def sent(out: list[TcpSegment]) -> list[int]:
    return [(s.seq - ISS - 1) // MSS for s in out if s.payload]


def test_rack_needs_sack_and_config() -> None:
    assert established().recovery.rack is not None
    assert established(cfg(rack=False)).recovery.rack is None
    assert established(cfg(sack=False)).recovery.rack is None


def test_reordering_window_waits_then_marks_lost() -> None:
    c = established()
    c.send(b"a" * 4 * MSS, 1.0)
    assert sent(c.output(1.0)) == [0, 1, 2, 3]
    c.on_segment(rseg(seg_no(1)), 1.05)  # segment 0: RACK.rtt = min_RTT = 50 ms
    # Segment 2 SACKed, 1 missing: sent before a delivered segment, but within
    # RACK.rtt + reo_wnd (min_RTT / 4 = 12.5 ms) of it: not lost yet, the timer is armed.
    c.on_segment(rseg(seg_no(1), sack=[(seg_no(2), seg_no(3))]), 1.06)
    assert sent(c.output(1.06)) == []
    rack = c.recovery.rack
    assert rack is not None and rack.reo_at == pytest.approx(1.0 + 0.06 + 0.0125)
    assert c.next_deadline() == pytest.approx(rack.reo_at)
    # The reordering timer fires: segment 1 is lost, recovery starts and resends it.
    t = rack.reo_at
    c.on_timer(t)
    assert sent(c.output(t)) == [1]
    assert c.counters["rack_recoveries"] == 1 and c.counters["rack_reo_timeouts"] == 1
    assert c.counters["timeouts"] == 0


def test_reordered_segment_arriving_in_the_window_is_not_resent() -> None:
    c = established()
    c.send(b"a" * 4 * MSS, 1.0)
    c.output(1.0)
    c.on_segment(rseg(seg_no(1)), 1.05)
    c.on_segment(rseg(seg_no(1), sack=[(seg_no(2), seg_no(3))]), 1.06)
    c.on_segment(rseg(seg_no(3)), 1.065)  # segment 1 was only late
    assert sent(c.output(1.065)) == []
    rack = c.recovery.rack
    # RFC 8985 (6.2 step 3): 1 was delivered below RACK.fack, never retransmitted.
    assert rack is not None and rack.reordering_seen
    assert rack.reo_at is None and c.counters["retransmits"] == 0


def test_three_sacked_segments_need_no_wait() -> None:
    # RFC 8985 (6.2 step 4): no reordering seen and DupThresh segments SACKed: reo_wnd = 0.
    c = established()
    c.send(b"a" * 5 * MSS, 1.0)
    c.output(1.0)
    c.on_segment(rseg(seg_no(1)), 1.05)
    c.on_segment(rseg(seg_no(1), sack=[(seg_no(2), seg_no(5))]), 1.06)
    assert sent(c.output(1.06)) == [1]


def test_tail_loss_probe_after_two_srtt_retransmits_the_last_segment() -> None:
    c = established()
    c.send(b"b" * 3 * MSS, 1.0)
    c.output(1.0)
    c.on_segment(rseg(seg_no(1)), 1.05)  # then segments 1 and 2 (the tail) are lost
    srtt = c.rtt.srtt
    assert srtt is not None
    pto = 1.05 + 2 * srtt  # two segments in flight: no delayed-ACK allowance
    assert c.next_deadline() == pytest.approx(pto)
    assert pto < c._rtx_at  # type: ignore[operator]
    c.on_timer(pto)
    out = c.output(pto)
    assert sent(out) == [2] and c.counters["tlp_probes"] == 1
    assert c._rtx_at == pytest.approx(pto + c.rtt.rto)  # RFC 8985 (7.3): RTO re-armed
    # The probe's ACK SACKs segment 2: segment 1, sent more than RACK.rtt + reo_wnd
    # before it, is lost; recovery resends it at once.
    t = pto + 0.05
    c.on_segment(rseg(seg_no(1), sack=[(seg_no(2), seg_no(3))]), t)
    assert sent(c.output(t)) == [1]
    c.on_segment(rseg(seg_no(3)), t + 0.05)
    assert c.counters["timeouts"] == 0 and c.snd_una == c.snd_max


def test_probe_sends_new_data_when_there_is_some() -> None:
    c = established(cfg(initial_cwnd_segments=2))
    c.send(b"c" * 4 * MSS, 1.0)
    assert sent(c.output(1.0)) == [0, 1]  # cwnd-limited
    t = c.next_deadline()
    assert t is not None and t == pytest.approx(1.0 + 2 * c.rtt.srtt)  # type: ignore[operator]
    c.on_timer(t)
    assert sent(c.output(t)) == [2]  # RFC 8985 (7.3): a new segment, beyond cwnd
    rack = c.recovery.rack
    assert rack is not None and rack.tlp_is_retrans is False and rack.tlp_end == c.snd_max


def test_lone_segment_pto_includes_delayed_ack_allowance_capped_by_rto() -> None:
    c = established(cfg(rto_min=1.0))
    c.send(b"d" * 100, 1.0)
    c.output(1.0)
    srtt = c.rtt.srtt
    assert srtt is not None
    assert c.next_deadline() == pytest.approx(1.0 + 2 * srtt + TLP_WCDELACKT)
    c2 = established(cfg(rto_min=0.2))
    c2.send(b"d" * 100, 1.0)
    c2.output(1.0)
    # 2 SRTT + 200 ms is after the RTO: the probe goes when the RTO would, instead of it.
    assert c2.next_deadline() == pytest.approx(1.0 + c2.rtt.rto)
    cwnd = c2.cc.cwnd  # type: ignore[union-attr]
    c2.on_timer(1.0 + c2.rtt.rto)
    out = c2.output(1.0 + c2.rtt.rto)
    assert len(out) == 1 and len(out[0].payload) == 100
    assert c2.counters["tlp_probes"] == 1 and c2.counters["timeouts"] == 0
    assert c2.cc.cwnd == cwnd  # type: ignore[union-attr]


def test_lost_probe_falls_back_to_the_rto() -> None:
    c = established()
    c.send(b"e" * 2 * MSS, 1.0)
    c.output(1.0)
    pto = c.next_deadline()
    assert pto is not None
    c.on_timer(pto)
    assert sent(c.output(pto)) == [1]
    rto_at = c.next_deadline()  # the probe is lost too: no second probe, the RTO fires
    assert rto_at == pytest.approx(pto + c.rtt.rto)
    c.on_timer(rto_at)  # type: ignore[arg-type]
    assert sent(c.output(rto_at)) == [0]  # type: ignore[arg-type]
    assert c.counters["timeouts"] == 1 and c.counters["tlp_probes"] == 1


def test_probe_that_repaired_a_loss_reduces_cwnd_once() -> None:
    c = established()
    c.send(b"f" * 4 * MSS, 1.0)
    c.output(1.0)
    c.on_segment(rseg(seg_no(3)), 1.05)  # segment 3 lost
    pto = c.next_deadline()
    assert pto is not None
    c.on_timer(pto)
    assert sent(c.output(pto)) == [3]
    c.on_segment(rseg(seg_no(4)), pto + 0.05)  # the probe repaired the tail
    cwnd = c.cc.cwnd  # type: ignore[union-attr]
    c.send(b"g" * MSS, pto + 0.06)
    c.output(pto + 0.06)
    c.on_segment(rseg(seg_no(5)), pto + 0.11)  # ACK passes the episode, no D-SACK came
    assert c.counters["tlp_recoveries"] == 1
    assert c.cc.cwnd < cwnd  # type: ignore[union-attr]


def test_dsack_for_the_probe_means_no_loss() -> None:
    c = established()
    c.send(b"f" * 4 * MSS, 1.0)
    c.output(1.0)
    c.on_segment(rseg(seg_no(3)), 1.05)
    pto = c.next_deadline()
    assert pto is not None
    c.on_timer(pto)
    c.output(pto)
    c.on_segment(rseg(seg_no(4)), pto + 0.01)  # the original segment 3 was only slow
    c.on_segment(rseg(seg_no(4), dsack=(seg_no(3), seg_no(4))), pto + 0.05)  # D-SACK: probe
    rack = c.recovery.rack
    assert rack is not None and rack.tlp_end is None  # the episode ends on the D-SACK itself
    cwnd = c.cc.cwnd  # type: ignore[union-attr]
    c.send(b"g" * MSS, pto + 0.06)
    c.output(pto + 0.06)
    c.on_segment(rseg(seg_no(5)), pto + 0.11)
    assert c.counters["tlp_recoveries"] == 0 and c.counters["dsack_rx"] == 1
    assert c.cc.cwnd >= cwnd  # type: ignore[union-attr]
    assert rack.reo_wnd_mult == 2  # RFC 8985 (6.2 step 4)


def test_pto_before_the_probes_dsack_infers_no_loss() -> None:
    c = established()
    c.send(b"f" * 4 * MSS, 1.0)
    c.output(1.0)
    c.on_segment(rseg(seg_no(3)), 1.05)
    pto = c.next_deadline()
    assert pto is not None
    c.on_timer(pto)
    assert sent(c.output(pto)) == [3]  # the probe
    c.on_segment(rseg(seg_no(4)), pto + 0.01)  # the original segment 3 was only slow
    c.send(b"g" * 2 * MSS, pto + 0.02)
    assert sent(c.output(pto + 0.02)) == [4, 5]
    # The PTO for segments 4-5 fires while the probe's D-SACK still waits in a queue: the
    # episode is not over (RFC 8985 7.4.2), so no loss is inferred and no second probe goes.
    pto2 = c.next_deadline()
    assert pto2 is not None and pto2 < pto + 0.02 + c.rtt.rto
    c.on_timer(pto2)
    assert sent(c.output(pto2)) == []
    assert c.counters["tlp_recoveries"] == 0 and c.counters["tlp_probes"] == 1
    c.on_segment(rseg(seg_no(4), dsack=(seg_no(3), seg_no(4))), pto2 + 0.01)
    rack = c.recovery.rack
    assert rack is not None and rack.tlp_end is None
    c.on_segment(rseg(seg_no(6)), pto2 + 0.02)
    assert c.counters["tlp_recoveries"] == 0


def test_lost_retransmission_is_found_by_time_not_by_rto() -> None:
    c = established()
    c.send(b"h" * 13 * MSS, 1.0)
    assert sent(c.output(1.0)) == list(range(10))
    c.on_segment(rseg(seg_no(1)), 1.05)
    c.on_segment(rseg(seg_no(1), sack=[(seg_no(2), seg_no(5))]), 1.05)
    assert sent(c.output(1.05)) == [1]  # RACK: 1 lost; cwnd 4500 < pipe: nothing new
    c.on_segment(rseg(seg_no(1), sack=[(seg_no(2), seg_no(10))]), 1.06)
    assert sent(c.output(1.06)) == [10, 11, 12]  # pipe = the retransmission of 1
    # New data sent after the retransmission of 1 is SACKed, 1 is not: it was lost again.
    c.on_segment(rseg(seg_no(1), sack=[(seg_no(2), seg_no(13))]), 1.12)
    assert sent(c.output(1.12)) == [1]
    assert c.counters["timeouts"] == 0 and c.counters["rack_recoveries"] == 1


def test_rack_log_splits_and_counts() -> None:
    r = Rack()
    r.on_sent(1, 4001, 1.0, False)  # one TSO super-segment
    sb = SackScoreboard()
    sb.update([(2001, 3001)], 1, 4001)
    r.on_ack(1, sb, 1.05, None, False, 4001)
    assert [(s.start, s.end, s.sacked) for s in r.segs] == [
        (1, 2001, False), (2001, 3001, True), (3001, 4001, False)
    ]
    assert r.pipe() == 3000
    r.on_rto(1)
    assert r.lost_ranges(1) == [(1, 2001), (3001, 4001)] and r.pipe() == 0
    r.on_sent(1, 1001, 2.0, True)
    assert r.lost_bytes == 2000 and r.n_rtx == 1
    r.on_ack(4001, SackScoreboard(), 2.05, None, False, 4001)
    assert r.segs == [] and r.lost_bytes == 0 and r.n_rtx == 0 and r.n_sacked == 0


# ------------------------------------------------------------------ D-SACK (RFC 2883)


def data(seq_off: int, n: int) -> TcpSegment:
    """``n`` bytes from the peer at offset ``seq_off`` of its stream (0 = first byte)."""
    return TcpSegment(RPORT, LPORT, (RISS + 1 + seq_off) & M, ISS + 1, ACK, 65535, b"x" * n)


def blocks(out: list[TcpSegment]) -> list[tuple[int, int]]:
    (ack,) = out
    assert ack.options is not None
    return [((a - RISS - 1) & M, (b - RISS - 1) & M) for a, b in ack.options.sack_blocks]


def test_dsack_reports_a_duplicate_below_rcv_nxt_once() -> None:
    c = established()
    c.on_segment(data(0, 100), 1.0)
    c.output(1.0)
    c.on_segment(data(0, 100), 1.1)  # a spurious retransmission
    assert blocks(c.output(1.1)) == [(0, 100)]
    assert c.counters["dsack_sent"] == 1
    c.on_segment(data(100, 100), 1.2)
    c.on_timer(1.3)
    out = c.output(1.3)
    assert len(out) == 1 and out[0].options is None  # reported once


def test_dsack_for_a_partial_overlap_and_an_out_of_order_duplicate() -> None:
    c = established()
    c.on_segment(data(0, 100), 1.0)
    c.output(1.0)
    c.on_segment(data(50, 100), 1.1)  # 50..100 again, 100..150 new
    assert blocks(c.output(1.1)) == [(50, 100)]
    c.on_segment(data(300, 100), 1.2)  # out of order
    assert blocks(c.output(1.2)) == [(300, 400)]
    c.on_segment(data(300, 100), 1.3)  # the same again: D-SACK first, then the SACK block
    assert blocks(c.output(1.3)) == [(300, 400), (300, 400)]


def test_no_dsack_without_sack() -> None:
    c = established(cfg(sack=False))
    c.on_segment(data(0, 100), 1.0)
    c.output(1.0)
    c.on_segment(data(0, 100), 1.1)
    (ack,) = c.output(1.1)
    assert ack.options is None


# ------------------------------------------------------------------ RFC 6298 (5.7)


def test_rto_is_three_seconds_after_a_lost_syn() -> None:
    c = TcpConnection.connect(cfg(rack=False), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    assert c.output(0.0)[0].flags == SYN
    c.on_timer(1.0)  # the SYN is lost: RTO 1 s
    assert c.output(1.0)[0].flags == SYN
    synack = TcpSegment(
        RPORT, LPORT, RISS, ISS + 1, SYN | ACK, 65535, b"", TcpOptions(mss=MSS, sack_permitted=True)
    )
    c.on_segment(synack, 1.05)
    assert c.rtt.srtt is None and c.rtt.rto == 3.0
    c.send(b"z" * 10, 1.1)
    c.output(1.1)
    assert c.next_deadline() == pytest.approx(4.1)
    # Without the lost SYN the handshake gives an RTT sample and the usual RTO.
    c2 = TcpConnection.connect(cfg(rack=False), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    c2.output(0.0)
    c2.on_segment(synack, 0.05)
    assert c2.rtt.srtt == pytest.approx(0.05) and c2.rtt.rto == 0.2


# ------------------------------------------------------------------ ECN (RFC 3168)


def _ecn_pair_syn(c_cfg: TcpConfig) -> TcpConnection:
    """Active open with ``c_cfg``; returns the connection after an ECN-setup SYN-ACK."""
    c = TcpConnection.connect(c_cfg, LIP, LPORT, RIP, RPORT, ISS, 0.0)
    (syn,) = c.output(0.0)
    assert syn.flags == SYN | ECE | CWR  # RFC 3168 (6.1.1): an ECN-setup SYN
    synack = TcpSegment(
        RPORT, LPORT, RISS, ISS + 1, SYN | ACK | ECE, 65535, b"", TcpOptions(mss=MSS)
    )
    c.on_segment(synack, 0.01)
    return c


def test_ecn_negotiation_both_ways() -> None:
    c = _ecn_pair_syn(cfg(ecn=True))
    assert c.ecn_ok
    # Off by default: a plain SYN; and a SYN-ACK with ECE and CWR is no ECN-setup SYN-ACK.
    plain_c = TcpConnection.connect(cfg(), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    assert plain_c.output(0.0)[0].flags == SYN
    # Passive side: answers an ECN-setup SYN with ECE (not CWR) when ecn_accept allows.
    syn = TcpSegment(RPORT, LPORT, RISS, 0, SYN | ECE | CWR, 65535, b"", TcpOptions(mss=MSS))
    p = TcpConnection.accept_syn(cfg(), LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    assert p.ecn_ok and p.output(0.0)[0].flags == SYN | ACK | ECE
    q = TcpConnection.accept_syn(cfg(ecn_accept=False), LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    assert not q.ecn_ok and q.output(0.0)[0].flags == SYN | ACK
    # RFC 3168 (6.1.1.1): the SYN retransmitted after a timeout is a plain SYN.
    r = TcpConnection.connect(cfg(ecn=True), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    assert r.output(0.0)[0].flags == SYN | ECE | CWR
    r.on_timer(1.0)
    assert r.output(1.0)[0].flags == SYN


def test_ect_on_new_data_only_and_ce_echoed_until_cwr() -> None:
    c = _ecn_pair_syn(cfg(ecn=True))
    (ack,) = c.output(0.01)
    assert ack.ecn == NOT_ECT  # RFC 3168 (6.1.4): pure ACKs are not ECT
    c.send(b"d" * 2 * MSS, 0.02)
    out = c.output(0.02)
    assert [s.ecn for s in out] == [ECT_0, ECT_0]
    # A CE-marked data segment from the peer: every ACK carries ECE until its CWR.
    ce = TcpSegment(RPORT, LPORT, RISS + 1, ISS + 1, ACK, 65535, b"x" * 100, ecn=CE)
    c.on_segment(ce, 0.05)
    (a1,) = c.output(0.05)
    assert a1.flags & ECE and c.counters["ecn_ce_rx"] == 1
    c.on_segment(TcpSegment(RPORT, LPORT, RISS + 101, ISS + 1, ACK, 65535, b"y" * 100), 0.06)
    c.on_timer(0.2)
    (a2,) = c.output(0.2)
    assert a2.flags & ECE
    cwr = TcpSegment(RPORT, LPORT, RISS + 201, ISS + 1, ACK | CWR, 65535, b"z" * 100)
    c.on_segment(cwr, 0.3)
    c.on_timer(0.5)
    (a3,) = c.output(0.5)
    assert not a3.flags & ECE
    # A retransmission is not ECT (RFC 3168 6.1.5).
    t = c.next_deadline()
    assert t is not None
    c.on_timer(t)
    rtx = [s for s in c.output(t) if s.payload]
    assert rtx and all(s.ecn == NOT_ECT for s in rtx)


def test_ece_reduces_cwnd_once_per_window_and_sets_cwr() -> None:
    c = _ecn_pair_syn(cfg(ecn=True, rack=False))
    c.send(b"d" * 20 * MSS, 0.02)
    assert len(c.output(0.02)) == 10
    cwnd = c.cc.cwnd  # type: ignore[union-attr]
    ece = TcpSegment(RPORT, LPORT, RISS + 1, seg_no(8), ACK | ECE, 65535)
    c.on_segment(ece, 0.05)
    assert c.counters["ecn_reductions"] == 1
    reduced = c.cc.cwnd  # type: ignore[union-attr]
    assert reduced < cwnd
    out = [s for s in c.output(0.05) if s.payload]
    assert out and out[0].flags & CWR and not any(s.flags & CWR for s in out[1:])
    # More ECEs for the same window: no second reduction; no retransmission either.
    c.on_segment(TcpSegment(RPORT, LPORT, RISS + 1, seg_no(9), ACK | ECE, 65535), 0.06)
    assert c.counters["ecn_reductions"] == 1 and c.counters["retransmits"] == 0


def test_cli_recovery_and_ecn_options_map_onto_tcp_config() -> None:
    import argparse

    from anp_async.cli.options import add_stack_options, tcp_config_from_args

    p = argparse.ArgumentParser()
    add_stack_options(p)
    default = tcp_config_from_args(p.parse_args([]))
    assert (default.sack, default.rack, default.ecn) == (True, True, False)
    sack = tcp_config_from_args(p.parse_args(["--recovery", "sack", "--ecn", "on"]))
    assert (sack.sack, sack.rack, sack.ecn) == (True, False, True)
    newreno = tcp_config_from_args(p.parse_args(["--recovery", "newreno"]))
    assert (newreno.sack, newreno.rack) == (False, False)


def test_rack_log_is_bounded() -> None:
    from anp_async.proto.tcp import rack as rack_mod

    r = Rack()
    for i in range(rack_mod.MAX_RECORDS + 10):
        r.on_sent(1 + 10 * i, 11 + 10 * i, 1.0, False)
    assert len(r.segs) == rack_mod.MAX_RECORDS  # the last ones joined the last record
    top = r.segs[-1].end
    sb = SackScoreboard()
    for k in range(50):  # SACK edges inside records: no split past the bound
        sb.update([(3 + 10 * k, 7 + 10 * k)], 1, top)
        r.on_ack(1, sb, 1.05, None, False, top)
    assert len(r.segs) == rack_mod.MAX_RECORDS and r.n_sacked == 0
    r.on_rto(1)
    r.on_sent(5, 8, 2.0, True)  # a retransmission inside a record restamps it whole
    assert len(r.segs) == rack_mod.MAX_RECORDS and r.segs[0].xmit == 2.0


def test_min_rtt_follows_a_longer_path_after_its_window() -> None:
    # RFC 8985 (6.2 step 4): RACK.min_RTT is windowed, so the reordering window
    # (min_RTT / 4) grows with a path that became longer for good.
    from anp_async.proto.tcp.rack import MIN_RTT_WINDOW

    r = Rack()
    sb = SackScoreboard()
    seq, now = 0, 1.0

    def one(rtt: float) -> None:
        nonlocal seq, now
        r.on_sent(seq, seq + MSS, now, False)
        seq += MSS
        now += rtt
        r.on_ack(seq, sb, now, None, False, seq)

    one(0.010)
    assert r.min_rtt == pytest.approx(0.010)
    r.reordering_seen = True  # else no reordering window at all once DupThresh is reached
    for _ in range(50):  # the path becomes 100 ms; inside the window the minimum holds
        one(0.100)
    assert r.min_rtt == pytest.approx(0.010)
    now += MIN_RTT_WINDOW
    one(0.100)
    one(0.100)
    assert r.min_rtt == pytest.approx(0.100)
    assert r.reo_wnd(False, 0.100) == pytest.approx(0.100 / 4)
