"""Hardening rules of the TCP engine, segment by segment.

RFC 5961 global challenge-ACK limit, RFC 7323 timestamps/PAWS details, keep-alive and user
timeout (RFC 1122 4.2.3.6, RFC 5482), zero-window probing and window shrinking (RFC 9293
3.8.6.1), sender and receiver SWS avoidance (RFC 9293 3.8.6.2), congestion-control choice.
Local ISS 1000, remote ISS 5000, as in test_tcp_connection.py.
"""

from __future__ import annotations

import pytest

from anp_async.proto.tcp import (
    ACK,
    PSH,
    RST,
    SYN,
    TcpConfig,
    TcpConnection,
    TcpOptions,
    TcpSegment,
    TcpState,
)
from anp_async.proto.tcp.config import ChallengeAckLimiter
from anp_async.proto.tcp.congestion import Cubic, NewReno
from tests.unit.tcp_templates import (
    ISS,
    LIP,
    LPORT,
    RIP,
    RISS,
    RPORT,
    WIN,
    M,
    closed_reason,
    established,
    lseg,
    plain,
    rseg,
)

# ------------------------------------------------------------------ RFC 5961


def test_global_challenge_ack_limit_shared_by_connections() -> None:
    limiter = ChallengeAckLimiter(limit=10, seed=1)
    conns = [established(plain(challenge_limiter=limiter), rport=RPORT + i) for i in range(4)]
    for c in conns:
        for _ in range(10):
            c.on_segment(TcpSegment(c.remote_port, LPORT, RISS + 300, 0, SYN, 1000), 5.2)
    sent = sum(c.counters["challenge_acks"] for c in conns)
    suppressed = sum(c.counters["challenge_acks_suppressed_global"] for c in conns)
    assert 5 <= sent <= 15  # one budget of limit/2 .. 3*limit/2 for the whole second
    assert sent + suppressed == 40
    assert limiter.sent == sent and limiter.suppressed == suppressed
    # A new second, a new budget.
    conns[0].on_segment(TcpSegment(conns[0].remote_port, LPORT, RISS + 9, 0, RST, 0), 6.0)
    assert limiter.sent == sent + 1


def test_challenge_budget_is_randomised() -> None:
    limiter = ChallengeAckLimiter(limit=100, seed=3)
    budgets = []
    for sec in range(10):
        n = 0
        while limiter.allow(sec + 0.5):
            n += 1
        budgets.append(n)
    assert all(50 <= b <= 150 for b in budgets)
    assert len(set(budgets)) > 3  # CVE-2016-5696: no fixed, countable budget


def test_ack_acceptability_in_close_wait() -> None:
    c = established()
    c.on_segment(rseg(RISS + 1, ISS + 1, ACK | 0x01), 1.0)  # FIN: CLOSE-WAIT
    c.output(1.0)
    assert c.state is TcpState.CLOSE_WAIT
    # RFC 5961 (5.2): an ACK of data never sent is answered with an ACK and dropped.
    c.on_segment(rseg(RISS + 2, ISS + 5000), 1.1)
    assert c.counters["dropped_bad_ack"] == 1
    assert c.output(1.1) == [lseg(ISS + 1, RISS + 2, window=WIN - 1)]
    assert c.state is TcpState.CLOSE_WAIT


# ------------------------------------------------------------------ RFC 7323


def _ts_conn() -> TcpConnection:
    cfg = TcpConfig(window_scale=False, sack=False, recv_buffer=WIN, msl=1.0)
    syn = rseg(RISS, 0, SYN, options=TcpOptions(mss=1460, timestamp=(100, 0)))
    c = TcpConnection.accept_syn(cfg, LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    c.output(0.0)
    c.on_segment(rseg(RISS + 1, ISS + 1, options=TcpOptions(timestamp=(101, c._ts_val(0.0)))), 0.0)
    return c


def test_timestamps_on_data_ack_probe_fin_but_not_rst() -> None:
    c = _ts_conn()
    c.send(b"a" * 10, 1.0)
    segs = c.output(1.0)
    c.on_segment(rseg(RISS + 1, ISS + 11, window=0, options=TcpOptions(timestamp=(102, 0))), 1.1)
    c.send(b"b", 1.2)
    assert c.output(1.2) == []
    t = c.next_deadline()
    c.on_timer(t)
    (probe,) = c.output(t)  # zero-window probe
    assert probe.seq == ISS + 10 and not probe.payload
    segs.append(probe)
    c.on_segment(rseg(RISS + 1, ISS + 11, options=TcpOptions(timestamp=(103, 0))), 5.1)
    c.shutdown(5.2)
    segs += c.output(5.2)  # data + FIN
    assert len(segs) >= 3
    assert all(s.options is not None and s.options.timestamp is not None for s in segs)
    c.abort(6.0)
    (rst,) = c.output(6.0)
    assert rst.flags & RST and rst.options is None  # RFC 7323 (3.2): not on RST


def test_paws_ts_recent_invalid_after_24_days_idle() -> None:
    c = _ts_conn()
    c.on_segment(rseg(RISS + 1, ISS + 1, payload=b"x", options=TcpOptions(timestamp=(5000, 0))), 1)
    c.output(1.0)
    assert c.ts_recent == 5000
    old = TcpOptions(timestamp=(4000, 0))
    c.on_segment(rseg(RISS + 2, ISS + 1, payload=b"y", options=old), 2.0)
    assert c.counters["dropped_paws"] == 1
    # RFC 7323 (5.5): after 24 days without a valid segment, TS.Recent no longer applies.
    later = 1.0 + 24 * 24 * 3600 + 10
    c.on_segment(rseg(RISS + 2, ISS + 1, payload=b"y", options=old), later)
    assert c.counters["dropped_paws"] == 1
    assert c.recv() == b"xy"


# ------------------------------------------------------------------ keep-alive, user timeout


def test_keepalive_answered_probe_keeps_connection() -> None:
    cfg = plain(keepalive=True, keepalive_idle=30.0, keepalive_interval=5.0, keepalive_count=3)
    c = established(cfg)
    t = 0.0
    for _ in range(5):  # five idle periods, each answered after two probes
        t += 30.0
        assert c.next_deadline() == pytest.approx(t)
        c.on_timer(t)
        assert c.output(t) == [lseg(ISS, RISS + 1)]
        t += 5.0
        c.on_timer(t)
        assert c.output(t) == [lseg(ISS, RISS + 1)]
        c.on_segment(rseg(RISS + 1, ISS + 1), t + 0.01)
        t += 0.01
    assert c.state is TcpState.ESTABLISHED
    assert c.counters["keepalive_probes"] == 10


def test_keepalive_count_then_timeout_exact_times() -> None:
    cfg = plain(keepalive=True, keepalive_idle=60.0, keepalive_interval=10.0, keepalive_count=4)
    c = established(cfg)
    times = []
    while c.state is not TcpState.CLOSED:
        t = c.next_deadline()
        c.on_timer(t)
        if c.output(t):
            times.append(t)
    assert times == pytest.approx([60.0, 70.0, 80.0, 90.0])
    assert t == pytest.approx(100.0)  # the fourth probe went unanswered for an interval
    assert closed_reason(c) == "timeout"


def test_no_keepalive_while_data_in_flight() -> None:
    c = established(plain(keepalive=True, keepalive_idle=1.0))
    c.send(b"z", 0.5)
    c.output(0.5)
    assert c.next_deadline() == pytest.approx(0.7)  # the RTO, not keep-alive
    assert c._keepalive_at() is None


def test_user_timeout_shorter_than_rto() -> None:
    c = established(plain(user_timeout=0.5, rto_initial=1.0, rto_min=1.0))
    c.send(b"u", 1.0)
    c.output(1.0)
    assert c.next_deadline() == pytest.approx(1.5)  # RFC 5482: the user timeout comes first
    c.on_timer(1.5)
    assert c.state is TcpState.CLOSED
    assert closed_reason(c) == "timeout"


# ------------------------------------------------------------------ zero window, shrinking, SWS


def test_shrunk_window_never_sends_past_right_edge() -> None:
    c = established(peer_window=10000)
    c.send(b"s" * 20000, 1.0)
    out = c.output(1.0)
    # 6 full segments; the 1240-byte tail waits (sender SWS: < half the max window).
    assert sum(len(s.payload) for s in out) == 8760
    # The peer ACKs 2000 and shrinks: right edge = 3001 + 1000 < what we already sent.
    c.on_segment(rseg(RISS + 1, ISS + 2001, window=1000), 1.1)
    assert c.output(1.1) == []
    # Window grows back a little: still nothing beyond 2001 + 9000.
    c.on_segment(rseg(RISS + 1, ISS + 3001, window=8500), 1.2)
    out = c.output(1.2)
    assert all(((s.seq - ISS - 1) & M) + len(s.payload) <= 3000 + 8500 for s in out)


def test_window_shrunk_to_zero_with_data_in_flight_probes_never_abort() -> None:
    c = established(plain(max_retries=3), peer_window=5000)
    c.send(b"q" * 5000, 1.0)
    c.output(1.0)
    c.on_segment(rseg(RISS + 1, ISS + 1, window=0), 1.05)  # shrunk to zero, nothing acked
    t = 1.05
    for _ in range(10):  # many more RTOs than max_retries, each probe answered
        t = c.next_deadline()
        c.on_timer(t)
        out = c.output(t)
        assert out == [lseg(ISS, RISS + 1)]  # a probe, no data past the (zero) window
        c.on_segment(rseg(RISS + 1, ISS + 1, window=0), t + 0.01)
    assert c.state is TcpState.ESTABLISHED
    assert c.counters["rto_zero_window_probes"] == 10
    # The window opens: the data is resent from SND.UNA.
    c.on_segment(rseg(RISS + 1, ISS + 1, window=5000), t + 0.02)
    out = c.output(t + 0.02)
    assert out and out[0].seq == ISS + 1


def test_unanswered_zero_window_probes_abort_after_max_retries() -> None:
    c = established(plain(max_retries=3), peer_window=5000)
    c.send(b"q" * 5000, 1.0)
    c.output(1.0)
    c.on_segment(rseg(RISS + 1, ISS + 1, window=0), 1.05)
    for _ in range(10):
        t = c.next_deadline()
        if t is None:
            break
        c.on_timer(t)
        c.output(t)
    assert c.state is TcpState.CLOSED and closed_reason(c) == "timeout"


def test_sender_sws_avoidance_waits_for_useful_window() -> None:
    c = established(peer_window=20000)
    c.send(b"w" * 30000, 1.0)
    assert sum(len(s.payload) for s in c.output(1.0)) == 14600  # initial window (10 MSS)
    # The peer takes 13140 bytes and offers 2260: the usable 800 bytes beyond what is in
    # flight are less than an MSS and than half the largest window (RFC 9293 3.8.6.2.1).
    c.on_segment(rseg(RISS + 1, ISS + 13141, window=2260), 1.1)
    assert c.output(1.1) == []
    # Offering 2920 more makes a full segment usable: exactly that goes out.
    c.on_segment(rseg(RISS + 1, ISS + 13141, window=2260 + 660), 1.2)
    assert [len(s.payload) for s in c.output(1.2)] == [1460]


def test_receiver_sws_avoidance_small_reads_do_not_open_window() -> None:
    c = established(plain(recv_buffer=8000, mss=1000))
    for i in range(8):
        c.on_segment(rseg(RISS + 1 + 1000 * i, ISS + 1, payload=b"r" * 1000), 1.0)
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 8001, window=0)]
    for k in range(9):  # 9 reads of 100 bytes: below min(RCV.BUFF/2, MSS)
        c.recv(100)
        assert c.output(1.1 + k * 0.01) == []
    c.recv(100)  # 1000 free now: a window update, never a window under one MSS
    assert c.output(1.3) == [lseg(ISS + 1, RISS + 8001, window=1000)]


# ------------------------------------------------------------------ congestion control choice


def test_congestion_selectable_and_switchable() -> None:
    c = established(plain(congestion="cubic"))
    assert isinstance(c.cc, Cubic) and c.info()["congestion"] == "cubic"
    c.cc.cwnd = 12345
    c.set_congestion("reno")  # Linux's name
    assert isinstance(c.cc, NewReno) and c.cc.cwnd == 12345
    assert c.cfg.congestion == "newreno"
    with pytest.raises(ValueError):
        c.set_congestion("vegas")
    assert isinstance(established().cc, NewReno)  # TcpConfig's own default


def test_psh_flag_sanity_with_cubic() -> None:
    c = established(plain(congestion="cubic", nodelay=True))
    c.send(b"p", 1.0)
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 1, ACK | PSH, payload=b"p")]
