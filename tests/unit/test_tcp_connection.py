"""The TCP state machine, segment by segment (in the manner of smoltcp's tcp.rs tests).

Each test builds segments from the remote peer, feeds them at explicit times and compares
the exact segments the engine emits (seq, ack, flags, window, options, payload).

Local side: ISS 1000 (first data byte 1001). Remote side: ISS 5000 (first data byte 5001).
"""

from __future__ import annotations

import pytest

from anp_async.proto.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Closed,
    Connected,
    DataReceived,
    EofReceived,
    SendSpace,
    TcpConfig,
    TcpConnection,
    TcpOptions,
    TcpSegment,
    TcpState,
)
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

# ---------------------------------------------------------------------------- opening


def test_active_open_plain() -> None:
    c = TcpConnection.connect(plain(), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    assert c.state is TcpState.SYN_SENT
    assert c.output(0.0) == [lseg(ISS, 0, SYN, WIN, options=TcpOptions(mss=1460))]
    assert c.output(0.0) == []  # nothing twice
    assert c.next_deadline() == pytest.approx(1.0)
    c.on_segment(rseg(RISS, ISS + 1, SYN | ACK, 30000, options=TcpOptions(mss=1200)), 0.01)
    assert c.state is TcpState.ESTABLISHED
    assert c.take_events() == [Connected()]
    assert c.output(0.01) == [lseg(ISS + 1, RISS + 1)]
    assert c.snd_mss == 1200 and c.snd_wnd == 30000
    assert c.next_deadline() is None
    assert c.rtt.srtt == pytest.approx(0.01)


def test_active_open_negotiates_options() -> None:
    cfg = TcpConfig(recv_buffer=256 * 1024, mss=1460)
    c = TcpConnection.connect(cfg, LIP, LPORT, RIP, RPORT, ISS, 1.0)
    (syn,) = c.output(1.0)
    ts0 = c._ts_val(1.0)
    assert syn == lseg(
        ISS,
        0,
        SYN,
        65535,
        options=TcpOptions(mss=1460, wscale=3, sack_permitted=True, timestamp=(ts0, 0)),
    )
    opts = TcpOptions(mss=1400, wscale=7, sack_permitted=True, timestamp=(777, ts0))
    c.on_segment(rseg(RISS, ISS + 1, SYN | ACK, 65535, options=opts), 1.02)
    assert c.ts_ok and c.sack_ok
    assert (c.snd_wscale, c.rcv_wscale) == (7, 3)
    assert c.snd_mss == 1400 - 12  # RFC 7323: TS option bytes come out of the MSS
    assert c.snd_wnd == 65535  # the SYN-ACK window is never scaled
    (ack,) = c.output(1.02)
    assert ack == lseg(
        ISS + 1,
        RISS + 1,
        ACK,
        (256 * 1024) >> 3,
        options=TcpOptions(timestamp=(c._ts_val(1.02), 777)),
    )
    # A later segment's window is scaled by the peer's shift.
    c.on_segment(rseg(RISS + 1, ISS + 1, ACK, 100, options=TcpOptions(timestamp=(778, 0))), 1.1)
    assert c.snd_wnd == 100 << 7


def test_wscale_only_if_both_offer_it() -> None:
    cfg = TcpConfig(recv_buffer=256 * 1024, timestamps=False, sack=False)
    c = TcpConnection.connect(cfg, LIP, LPORT, RIP, RPORT, ISS, 0.0)
    c.output(0.0)
    c.on_segment(rseg(RISS, ISS + 1, SYN | ACK, 5000, options=TcpOptions(mss=1460)), 0.01)
    assert (c.snd_wscale, c.rcv_wscale) == (0, 0)
    (ack,) = c.output(0.01)
    assert ack.window == 65535  # unscaled: capped at 16 bits
    c.on_segment(rseg(RISS + 1, ISS + 1, ACK, 5000), 0.02)
    assert c.snd_wnd == 5000


def test_passive_open() -> None:
    syn = rseg(RISS, 0, SYN, 20000, options=TcpOptions(mss=1460))
    c = TcpConnection.accept_syn(plain(), LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    assert c.state is TcpState.SYN_RECEIVED
    assert c.output(0.0) == [lseg(ISS, RISS + 1, SYN | ACK, WIN, options=TcpOptions(mss=1460))]
    assert c.output(0.0) == []
    c.on_segment(rseg(RISS + 1, ISS + 1, ACK, 20000), 0.005)
    assert c.state is TcpState.ESTABLISHED
    assert c.take_events() == [Connected()]
    assert c.output(0.005) == []  # the handshake's last ACK needs no answer
    assert c.snd_wnd == 20000


def test_passive_open_answers_only_offered_options() -> None:
    syn = rseg(RISS, 0, SYN, 20000)  # no options at all
    c = TcpConnection.accept_syn(TcpConfig(), LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    (synack,) = c.output(0.0)
    assert synack.options == TcpOptions(mss=1460)
    assert c.snd_mss == 536  # RFC 9293 (3.7.1) default when the SYN has no MSS
    assert not (c.ts_ok or c.sack_ok or c.snd_wscale or c.rcv_wscale)


def test_syn_ack_retransmitted_and_dup_syn_answered() -> None:
    syn = rseg(RISS, 0, SYN, 20000, options=TcpOptions(mss=1460))
    c = TcpConnection.accept_syn(plain(), LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    synack = lseg(ISS, RISS + 1, SYN | ACK, WIN, options=TcpOptions(mss=1460))
    assert c.output(0.0) == [synack]
    c.on_segment(syn, 0.3)  # the peer did not get it and repeats its SYN
    assert c.output(0.3) == [synack]
    c.on_timer(1.0)
    assert c.output(1.0) == [synack]
    assert c.counters["retransmits"] >= 1


def test_bad_ack_in_syn_received_gets_rst() -> None:
    syn = rseg(RISS, 0, SYN, 20000, options=TcpOptions(mss=1460))
    c = TcpConnection.accept_syn(plain(), LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    c.output(0.0)
    c.on_segment(rseg(RISS + 1, 4242, ACK), 0.01)
    assert c.output(0.01) == [TcpSegment(LPORT, RPORT, 4242, 0, RST, 0)]
    assert c.state is TcpState.SYN_RECEIVED


def test_simultaneous_open() -> None:
    c = TcpConnection.connect(plain(), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    c.output(0.0)
    # The peer's SYN crosses ours.
    c.on_segment(rseg(RISS, 0, SYN, 30000, options=TcpOptions(mss=1460)), 0.01)
    assert c.state is TcpState.SYN_RECEIVED
    assert c.output(0.01) == [lseg(ISS, RISS + 1, SYN | ACK, WIN, options=TcpOptions(mss=1460))]
    # The peer's SYN-ACK (its SYN again, now acking ours) completes the handshake.
    c.on_segment(rseg(RISS, ISS + 1, SYN | ACK, 30000, options=TcpOptions(mss=1460)), 0.02)
    assert c.state is TcpState.ESTABLISHED
    assert c.take_events() == [Connected()]
    c.send(b"hi", 0.03)
    assert c.output(0.03) == [lseg(ISS + 1, RISS + 1, ACK | PSH, payload=b"hi")]


def test_data_queued_before_connect_is_sent_after_handshake() -> None:
    c = TcpConnection.connect(plain(), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    assert c.send(b"early", 0.0) == 5
    assert [s.flags for s in c.output(0.0)] == [SYN]
    c.on_segment(rseg(RISS, ISS + 1, SYN | ACK, 30000, options=TcpOptions(mss=1460)), 0.01)
    assert c.output(0.01) == [lseg(ISS + 1, RISS + 1, ACK | PSH, payload=b"early")]


# ---------------------------------------------------------------------------- SYN-SENT failures


def test_syn_retries_then_timeout() -> None:
    c = TcpConnection.connect(plain(syn_retries=2), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    syn = lseg(ISS, 0, SYN, WIN, options=TcpOptions(mss=1460))
    assert c.output(0.0) == [syn]
    for t in (1.0, 3.0):  # RFC 6298 (5.5): the timeout doubles
        assert c.next_deadline() == pytest.approx(t)
        c.on_timer(t)
        assert c.output(t) == [syn]
    assert c.next_deadline() == pytest.approx(7.0)
    c.on_timer(7.0)
    assert c.state is TcpState.CLOSED
    assert c.take_events() == [Closed("timeout")]
    assert c.output(7.0) == []


def test_rst_in_syn_sent_refused() -> None:
    c = TcpConnection.connect(plain(), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    c.output(0.0)
    c.on_segment(rseg(0, ISS + 1, RST), 0.01)  # RST without ACK: ignored
    assert c.state is TcpState.SYN_SENT
    c.on_segment(rseg(0, ISS + 7, RST | ACK), 0.01)  # ACK not for our SYN: ignored
    assert c.state is TcpState.SYN_SENT
    assert c.output(0.01) == []
    c.on_segment(rseg(0, ISS + 1, RST | ACK), 0.02)
    assert c.state is TcpState.CLOSED
    assert c.take_events() == [Closed("refused")]


def test_bad_ack_in_syn_sent_gets_rst() -> None:
    c = TcpConnection.connect(plain(), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    c.output(0.0)
    c.on_segment(rseg(RISS, 999, SYN | ACK), 0.01)
    assert c.output(0.01) == [TcpSegment(LPORT, RPORT, 999, 0, RST, 0)]
    assert c.state is TcpState.SYN_SENT


# ---------------------------------------------------------------------------- receiving


def test_delayed_ack_timer() -> None:
    c = established()
    c.on_segment(rseg(RISS + 1, ISS + 1, ACK | PSH, payload=b"abc"), 1.0)
    assert c.take_events() == [DataReceived(3)]
    assert c.output(1.0) == []
    assert c.next_deadline() == pytest.approx(1.04)
    c.on_timer(1.04)
    assert c.output(1.04) == [lseg(ISS + 1, RISS + 4, window=WIN - 3)]
    assert c.next_deadline() is None
    assert c.recv() == b"abc"


def test_ack_immediately_after_two_full_segments() -> None:
    c = established()
    full = b"x" * 1460
    c.on_segment(rseg(RISS + 1, ISS + 1, payload=full), 1.0)
    assert c.output(1.0) == []
    c.on_segment(rseg(RISS + 1 + 1460, ISS + 1, payload=full), 1.001)
    assert c.output(1.001) == [lseg(ISS + 1, RISS + 1 + 2920, window=WIN - 2920)]


def test_batch_of_segments_gives_one_ack() -> None:
    c = established()
    for i in range(8):
        c.on_segment(rseg(RISS + 1 + i * 1000, ISS + 1, payload=b"y" * 1000), 1.0)
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 8001, window=WIN - 8000)]
    assert c.take_events() == [DataReceived(8000)]


def test_ooo_reassembly_and_sack_blocks() -> None:
    c = established(plain(sack=True), syn_opts=TcpOptions(mss=1460, sack_permitted=True))
    data = bytes(range(256)) * 2
    base = RISS + 1

    def piece(a: int, b: int) -> TcpSegment:
        return rseg(base + a, ISS + 1, payload=data[a:b])

    c.on_segment(piece(0, 100), 1.0)  # in order: ACK delayed
    c.on_segment(piece(200, 300), 1.0)  # out of order: ACK now, with SACK
    sack1 = TcpOptions(sack_blocks=((base + 200, base + 300),))
    assert c.output(1.0) == [lseg(ISS + 1, base + 100, window=WIN - 100, options=sack1)]
    c.on_segment(piece(400, 500), 1.1)
    sack2 = TcpOptions(sack_blocks=((base + 400, base + 500), (base + 200, base + 300)))
    assert c.output(1.1) == [lseg(ISS + 1, base + 100, window=WIN - 100, options=sack2)]
    c.on_segment(piece(100, 200), 1.2)  # fills the first hole
    sack3 = TcpOptions(sack_blocks=((base + 400, base + 500),))
    assert c.output(1.2) == [lseg(ISS + 1, base + 300, window=WIN - 300, options=sack3)]
    # Overlapping retransmission: old, new and already-held bytes at once.
    c.on_segment(piece(250, 450), 1.3)
    # RFC 2883 (4.1.1): the bytes below RCV.NXT (250..300) come back in a D-SACK block.
    dsack = TcpOptions(sack_blocks=((base + 250, base + 300),))
    assert c.output(1.3) == [lseg(ISS + 1, base + 500, window=WIN - 500, options=dsack)]
    assert c.recv() == data[:500]
    assert c.counters["ooo_segments"] == 2


def test_duplicate_segment_delivered_once_and_acked() -> None:
    c = established()
    c.on_segment(rseg(RISS + 1, ISS + 1, payload=b"hello"), 1.0)
    c.on_segment(rseg(RISS + 1, ISS + 1, payload=b"hello"), 1.0)
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 6, window=WIN - 5)]
    assert c.recv() == b"hello"
    assert c.counters["dup_segments"] == 1
    # Partly old, partly new.
    c.on_segment(rseg(RISS + 4, ISS + 1, payload=b"lo world"), 1.1)
    assert c.recv() == b" world"


def test_bounded_reassembly() -> None:
    c = established(plain(max_ooo_segments=4))
    for i in range(6):
        c.on_segment(rseg(RISS + 1 + 100 + i * 200, ISS + 1, payload=b"z" * 100), 1.0)
    assert len(c._ooo) == 4
    assert c.counters["dropped_ooo_full"] == 2


def test_data_beyond_window_is_trimmed() -> None:
    c = established(plain(recv_buffer=2000))
    c.on_segment(rseg(RISS + 1, ISS + 1, payload=b"a" * 2500), 1.0)
    assert c.recv_available == 2000
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 2001, window=0)]


def test_window_update_after_recv() -> None:
    c = established(plain(recv_buffer=4000, mss=1000))
    for i in range(4):
        c.on_segment(rseg(RISS + 1 + 1000 * i, ISS + 1, payload=b"q" * 1000), 1.0)
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 4001, window=0)]
    assert len(c.recv(500)) == 500
    assert c.output(1.1) == []  # RFC 9293 receiver SWS: 500 < min(buf/2, MSS)
    assert len(c.recv(600)) == 600
    assert c.output(1.2) == [lseg(ISS + 1, RISS + 4001, window=1100)]


def test_zero_window_still_accepts_acks() -> None:
    c = established(plain(recv_buffer=2000))
    c.send(b"out", 1.0)
    c.output(1.0)
    c.on_segment(rseg(RISS + 1, ISS + 1, payload=b"a" * 2000), 1.0)
    c.output(1.0)
    # Window is zero; a segment with text at RCV.NXT still delivers its ACK.
    c.on_segment(rseg(RISS + 2001, ISS + 4, payload=b"b"), 1.1)
    assert c.snd_una == 4
    assert c.recv_available == 2000
    assert c.output(1.1) == [lseg(ISS + 4, RISS + 2001, window=0)]


def test_paws_drops_old_timestamp() -> None:
    cfg = TcpConfig(window_scale=False, sack=False, recv_buffer=WIN, msl=1.0)
    syn = rseg(RISS, 0, SYN, 65535, options=TcpOptions(mss=1460, timestamp=(100, 0)))
    c = TcpConnection.accept_syn(cfg, LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    c.output(0.0)
    ts = TcpOptions(timestamp=(101, c._ts_val(0.0)))
    c.on_segment(rseg(RISS + 1, ISS + 1, ACK, options=ts), 0.01)
    assert c.state is TcpState.ESTABLISHED
    c.on_segment(
        rseg(RISS + 1, ISS + 1, payload=b"new", options=TcpOptions(timestamp=(200, 0))), 0.1
    )
    assert c.ts_recent == 200
    c.output(0.2)
    old = rseg(RISS + 4, ISS + 1, payload=b"old", options=TcpOptions(timestamp=(150, 0)))
    c.on_segment(old, 0.3)
    assert c.counters["dropped_paws"] == 1
    assert c.recv() == b"new"
    assert c.output(0.3) == [
        lseg(ISS + 1, RISS + 4, window=WIN - 3, options=TcpOptions(timestamp=(c._ts_val(0.3), 200)))
    ]


# ---------------------------------------------------------------------------- sending


def test_send_segments_with_psh_on_last() -> None:
    c = established()
    data = bytes(range(256)) * 12  # 3072 bytes
    assert c.send(data, 1.0) == 3072
    assert c.output(1.0) == [
        lseg(ISS + 1, RISS + 1, payload=data[:1460]),
        lseg(ISS + 1461, RISS + 1, payload=data[1460:2920]),
        lseg(ISS + 2921, RISS + 1, ACK | PSH, payload=data[2920:]),
    ]
    c.on_segment(rseg(RISS + 1, ISS + 3073), 1.1)
    assert SendSpace() in c.take_events()
    assert c.send_queued == 0


def test_nagle_holds_small_segment() -> None:
    c = established()
    c.send(b"a", 1.0)
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 1, ACK | PSH, payload=b"a")]
    c.send(b"b", 1.01)
    c.send(b"c", 1.02)
    assert c.output(1.02) == []  # a small segment is unacknowledged
    c.on_segment(rseg(RISS + 1, ISS + 2), 1.05)
    assert c.output(1.05) == [lseg(ISS + 2, RISS + 1, ACK | PSH, payload=b"bc")]


def test_nodelay_sends_at_once() -> None:
    c = established(plain(nodelay=True))
    c.send(b"a", 1.0)
    c.output(1.0)
    c.send(b"b", 1.01)
    assert c.output(1.01) == [lseg(ISS + 2, RISS + 1, ACK | PSH, payload=b"b")]


def test_respects_peer_window() -> None:
    c = established(peer_window=3000)
    c.send(b"w" * 5000, 1.0)
    out = c.output(1.0)
    assert [len(s.payload) for s in out] == [1460, 1460]  # 80 left: SWS avoidance waits
    c.on_segment(rseg(RISS + 1, ISS + 2921, window=3000), 1.1)
    out = c.output(1.1)
    assert [len(s.payload) for s in out] == [1460, 620]
    assert out[-1].flags == ACK | PSH


def test_send_buffer_bounded() -> None:
    c = established(plain(send_buffer=5000))
    assert c.send(b"x" * 8000, 1.0) == 5000
    assert c.send_space() == 0
    assert c.send(b"y", 1.0) == 0


def test_zero_window_probes_with_backoff() -> None:
    c = established()
    c.on_segment(rseg(RISS + 1, ISS + 1, window=0), 0.5)
    assert c.snd_wnd == 0
    c.send(b"hello", 1.0)
    assert c.output(1.0) == []
    probe = lseg(ISS, RISS + 1)  # SEG.SEQ = SND.UNA - 1, no text
    t = 1.0
    for interval in (0.2, 0.4, 0.8, 1.6):
        assert c.next_deadline() == pytest.approx(t + interval)
        t += interval
        c.on_timer(t)
        assert c.output(t) == [probe]
        c.on_segment(rseg(RISS + 1, ISS + 1, window=0), t + 0.01)  # answered, still zero
        assert c.output(t + 0.01) == []
    assert c.state is TcpState.ESTABLISHED
    c.on_segment(rseg(RISS + 1, ISS + 1, window=1000), t + 0.05)
    assert c.output(t + 0.05) == [lseg(ISS + 1, RISS + 1, ACK | PSH, payload=b"hello")]
    assert c.counters["zero_window_probes"] == 4


def test_many_answered_probes_never_abort() -> None:
    c = established(plain(max_retries=3))
    c.on_segment(rseg(RISS + 1, ISS + 1, window=0), 0.5)
    c.send(b"x", 1.0)
    c.output(1.0)
    t = 1.0
    for _ in range(10):
        t = c.next_deadline()
        c.on_timer(t)
        c.output(t)
        c.on_segment(rseg(RISS + 1, ISS + 1, window=0), t + 0.01)
    assert c.state is TcpState.ESTABLISHED


def test_unanswered_probes_time_out() -> None:
    c = established(plain(max_retries=3))
    c.on_segment(rseg(RISS + 1, ISS + 1, window=0), 0.5)
    c.send(b"x", 1.0)
    c.output(1.0)
    for _ in range(10):
        t = c.next_deadline()
        if t is None:
            break
        c.on_timer(t)
        c.output(t)
    assert c.state is TcpState.CLOSED
    assert closed_reason(c) == "timeout"


# ---------------------------------------------------------------------------- retransmission


def test_rto_first_at_rto_then_doubled() -> None:
    c = established()  # handshake RTT sample 0 -> RTO = rto_min = 0.2
    assert c.rtt.rto == pytest.approx(0.2)
    c.send(b"r" * 100, 1.0)
    seg = lseg(ISS + 1, RISS + 1, ACK | PSH, payload=b"r" * 100)
    assert c.output(1.0) == [seg]
    t = 1.0
    for rto in (0.2, 0.4, 0.8):
        assert c.next_deadline() == pytest.approx(t + rto)
        t += rto
        c.on_timer(t)
        assert c.output(t) == [seg]
    assert c.counters["retransmits"] == 3
    assert c.counters["timeouts"] == 3


def test_karn_no_rtt_sample_from_retransmission() -> None:
    c = established()
    samples = c.rtt.samples
    c.send(b"k" * 10, 1.0)
    c.output(1.0)
    c.on_timer(1.2)
    c.output(1.2)
    c.on_segment(rseg(RISS + 1, ISS + 11), 1.25)
    assert c.rtt.samples == samples  # ambiguous: no sample
    assert c.rtt.rto == pytest.approx(0.4)  # backoff kept until a valid sample
    c.send(b"m" * 10, 2.0)
    c.output(2.0)
    c.on_segment(rseg(RISS + 1, ISS + 21), 2.05)
    assert c.rtt.samples == samples + 1
    assert c.rtt.srtt == pytest.approx(0.05 / 8)  # 7/8 * 0 + 1/8 * 0.05


def test_max_retries_timeout() -> None:
    c = established(plain(max_retries=2))
    c.send(b"x", 1.0)
    c.output(1.0)
    for _ in range(3):
        t = c.next_deadline()
        c.on_timer(t)
        c.output(t)
    assert c.state is TcpState.CLOSED
    assert closed_reason(c) == "timeout"


def test_user_timeout() -> None:
    c = established(plain(user_timeout=1.0, rto_max=10.0))
    c.send(b"x", 1.0)
    c.output(1.0)
    t = 1.0
    while c.state is not TcpState.CLOSED:
        t = c.next_deadline()
        c.on_timer(t)
        c.output(t)
    assert t == pytest.approx(2.0)
    assert closed_reason(c) == "timeout"


def test_rto_go_back_n_and_cwnd_one_segment() -> None:
    c = established()
    data = b"".join(bytes([i]) * 1460 for i in range(5))
    c.send(data, 1.0)
    assert len(c.output(1.0)) == 5
    c.on_timer(1.2)
    assert c.cc.cwnd == 1460
    assert c.output(1.2) == [lseg(ISS + 1, RISS + 1, payload=data[:1460])]
    c.on_segment(rseg(RISS + 1, ISS + 1461), 1.25)  # slow start: two more
    assert [s.seq for s in c.output(1.25)] == [ISS + 1461, ISS + 2921]


def test_fast_retransmit_and_newreno_partial_ack() -> None:
    c = established()
    mss = 1460
    data = b"".join(bytes([i]) * mss for i in range(10))
    c.send(data, 1.0)
    assert len(c.output(1.0)) == 10  # initial window: 10 segments
    for i in range(2):
        c.on_segment(rseg(RISS + 1, ISS + 1), 1.1 + i * 0.001)
        assert c.output(1.1) == []
    c.on_segment(rseg(RISS + 1, ISS + 1), 1.103)
    assert c.output(1.103) == [lseg(ISS + 1, RISS + 1, payload=data[:mss])]
    assert c.counters["fast_retransmits"] == 1
    # RFC 5681: ssthresh = flight/2, cwnd = ssthresh + 3*MSS.
    assert c.cc.ssthresh == 5 * mss
    assert c.cc.cwnd == 8 * mss
    # Partial ACK (segments 0 and 1): retransmit the next hole at once (RFC 6582).
    c.on_segment(rseg(RISS + 1, ISS + 1 + 2 * mss), 1.2)
    assert c.output(1.2)[0] == lseg(ISS + 1 + 2 * mss, RISS + 1, payload=data[2 * mss : 3 * mss])
    assert c.counters["partial_acks"] == 1
    # Full ACK ends recovery with cwnd = ssthresh.
    c.on_segment(rseg(RISS + 1, ISS + 1 + 10 * mss), 1.3)
    assert not c.recovery.in_recovery
    assert c.cc.cwnd == 5 * mss


def test_ack_of_unsent_data_is_acked_and_dropped() -> None:
    c = established()
    c.on_segment(rseg(RISS + 1, ISS + 500, payload=b"zz"), 1.0)
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 1)]
    assert c.recv_available == 0
    assert c.counters["dropped_bad_ack"] == 1


# ---------------------------------------------------------------------------- RST / SYN (RFC 5961)


def test_rst_exact_resets() -> None:
    c = established()
    c.on_segment(rseg(RISS + 1, 0, RST), 1.0)
    assert c.state is TcpState.CLOSED
    assert c.take_events() == [Closed("reset")]
    assert c.output(1.0) == []


def test_rst_in_window_gets_challenge_ack() -> None:
    c = established()
    c.on_segment(rseg(RISS + 101, 0, RST), 1.0)
    assert c.state is TcpState.ESTABLISHED
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 1)]
    assert c.counters["challenge_acks"] == 1


def test_rst_out_of_window_dropped() -> None:
    c = established()
    c.on_segment(rseg(RISS + 1 + 70000, 0, RST), 1.0)
    c.on_segment(rseg(RISS - 10, 0, RST), 1.0)
    assert c.state is TcpState.ESTABLISHED
    assert c.output(1.0) == []


def test_syn_in_established_gets_challenge_ack() -> None:
    c = established()
    c.on_segment(rseg(RISS + 300, 0, SYN), 1.0)
    assert c.state is TcpState.ESTABLISHED
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 1)]


def test_challenge_acks_rate_limited() -> None:
    c = established(plain(challenge_ack_limit=3))
    for _ in range(10):
        c.on_segment(rseg(RISS + 300, 0, SYN), 1.0)
    assert c.counters["challenge_acks"] == 3
    assert c.counters["challenge_acks_suppressed"] == 7


def test_abort_sends_rst() -> None:
    c = established()
    c.abort(1.0)
    assert c.state is TcpState.CLOSED
    assert c.output(1.0) == [TcpSegment(LPORT, RPORT, ISS + 1, RISS + 1, RST | ACK, 0)]
    assert c.take_events() == [Closed("aborted")]
    assert c.output(1.1) == []


# ---------------------------------------------------------------------------- closing


def test_active_close_fin_wait_time_wait() -> None:
    c = established()
    c.shutdown(1.0)
    assert c.state is TcpState.FIN_WAIT_1
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 1, FIN | ACK)]
    c.on_segment(rseg(RISS + 1, ISS + 2), 1.05)
    assert c.state is TcpState.FIN_WAIT_2
    assert c.output(1.05) == []
    # Half-closed: still receiving.
    c.on_segment(rseg(RISS + 1, ISS + 2, ACK | PSH, payload=b"more"), 1.1)
    assert c.recv() == b"more"
    c.on_segment(rseg(RISS + 5, ISS + 2, FIN | ACK), 1.2)
    assert c.state is TcpState.TIME_WAIT
    assert c.take_events() == [DataReceived(4), EofReceived(), Closed("normal")]
    # The FIN took one sequence number; SWS avoidance keeps the right edge where it was.
    assert c.output(1.2) == [lseg(ISS + 2, RISS + 6, window=WIN - 5)]
    assert c.next_deadline() == pytest.approx(1.2 + 2.0)
    # A retransmitted FIN is ACKed again and restarts the 2*MSL timer.
    c.on_segment(rseg(RISS + 5, ISS + 2, FIN | ACK), 2.0)
    assert c.output(2.0) == [lseg(ISS + 2, RISS + 6, window=WIN - 5)]
    assert c.next_deadline() == pytest.approx(4.0)
    c.on_timer(4.0)
    assert c.state is TcpState.CLOSED
    assert c.take_events() == []  # Closed was already reported


def test_passive_close_close_wait_last_ack() -> None:
    c = established()
    c.on_segment(rseg(RISS + 1, ISS + 1, FIN | ACK), 1.0)
    assert c.state is TcpState.CLOSE_WAIT
    assert c.take_events() == [EofReceived()]
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 2, window=WIN - 1)]
    # Half-closed the other way: we can still send.
    c.send(b"bye", 1.1)
    c.shutdown(1.1)
    assert c.state is TcpState.LAST_ACK
    assert c.output(1.1) == [lseg(ISS + 1, RISS + 2, FIN | PSH | ACK, WIN - 1, b"bye")]
    c.on_segment(rseg(RISS + 2, ISS + 5), 1.2)
    assert c.state is TcpState.CLOSED
    assert c.take_events() == [Closed("normal"), SendSpace()]


def test_simultaneous_close_via_closing() -> None:
    c = established()
    c.shutdown(1.0)
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 1, FIN | ACK)]
    c.on_segment(rseg(RISS + 1, ISS + 1, FIN | ACK), 1.01)  # their FIN, not acking ours
    assert c.state is TcpState.CLOSING
    assert c.output(1.01) == [lseg(ISS + 2, RISS + 2, window=WIN - 1)]
    c.on_segment(rseg(RISS + 2, ISS + 2), 1.02)
    assert c.state is TcpState.TIME_WAIT
    assert c.take_events() == [EofReceived(), Closed("normal")]


def test_fin_with_ack_of_our_fin_goes_straight_to_time_wait() -> None:
    c = established()
    c.shutdown(1.0)
    c.output(1.0)
    c.on_segment(rseg(RISS + 1, ISS + 2, FIN | ACK), 1.01)
    assert c.state is TcpState.TIME_WAIT


def test_fin_retransmitted() -> None:
    c = established()
    c.shutdown(1.0)
    fin = lseg(ISS + 1, RISS + 1, FIN | ACK)
    assert c.output(1.0) == [fin]
    c.on_timer(1.2)
    assert c.output(1.2) == [fin]
    c.on_timer(1.6)
    assert c.output(1.6) == [fin]


def test_out_of_order_fin_waits_for_the_gap() -> None:
    c = established()
    c.on_segment(rseg(RISS + 4, ISS + 1, FIN | ACK, payload=b"def"), 1.0)
    assert c.state is TcpState.ESTABLISHED
    c.on_segment(rseg(RISS + 1, ISS + 1, payload=b"abc"), 1.1)
    assert c.state is TcpState.CLOSE_WAIT
    assert c.recv() == b"abcdef"
    assert c.take_events() == [DataReceived(6), EofReceived()]


def test_out_of_order_bare_fin_is_acked_at_once() -> None:
    # RFC 5681 (4.2): an out-of-order segment gets an immediate duplicate ACK -- a FIN
    # without data too (it occupies sequence space past a hole), as Linux does.
    c = established()
    c.on_segment(rseg(RISS + 1, ISS + 1, payload=b"abc"), 1.0)  # in order: ACK delayed
    c.on_segment(rseg(RISS + 7, ISS + 1, FIN | ACK), 1.0)  # "def" was lost before it
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 4, window=WIN - 3)]
    assert c.counters["ooo_segments"] == 1
    c.on_segment(rseg(RISS + 4, ISS + 1, payload=b"def"), 1.1)  # fills the hole: FIN counts
    assert c.state is TcpState.CLOSE_WAIT
    # (the FIN took a sequence number; the window's right edge stays where it was)
    assert c.output(1.1) == [lseg(ISS + 1, RISS + 8, window=WIN - 7)]
    assert c.recv() == b"abcdef"


def test_info_and_counters() -> None:
    c = established()
    info = c.info()
    for key in (
        "state", "cwnd", "ssthresh", "srtt", "rttvar", "rto", "snd_una", "snd_nxt", "snd_wnd",
        "rcv_nxt", "rcv_wnd", "bytes_sent", "bytes_acked", "bytes_received", "retransmits", "mss",
    ):  # fmt: skip
        assert key in info
    assert info["state"] == "ESTABLISHED"
    assert info["snd_una"] == ISS + 1 and info["rcv_nxt"] == RISS + 1
    for key in ("retransmits", "fast_retransmits", "timeouts", "ooo_segments", "dup_segments",
                "dropped_unacceptable", "dropped_bad_ack", "rst_received"):  # fmt: skip
        assert c.counters[key] == 0


def test_sequence_wraparound() -> None:
    syn = rseg(M - 2, 0, SYN, 65535, options=TcpOptions(mss=1460))
    c = TcpConnection.accept_syn(plain(), LIP, LPORT, RIP, RPORT, syn, M - 5, 0.0)
    c.output(0.0)
    c.on_segment(rseg(M - 1, M - 4, ACK), 0.01)
    assert c.state is TcpState.ESTABLISHED
    c.on_segment(rseg(M - 1, M - 4, payload=b"0123456789"), 0.02)
    c.send(b"abcdefghij", 0.02)
    out = c.output(0.02)
    assert out == [lseg(M - 4, 8, ACK | PSH, window=WIN - 10, payload=b"abcdefghij")]
    c.on_segment(rseg(8, 5, ACK), 0.03)
    assert c.snd_una == 11 and c.send_queued == 0
    assert c.recv() == b"0123456789"


# ---------------------------------------------------------------------------- more


def test_keepalive_probes_then_timeout() -> None:
    cfg = plain(keepalive=True, keepalive_idle=10.0, keepalive_interval=2.0, keepalive_count=2)
    c = established(cfg)
    assert c.next_deadline() == pytest.approx(10.0)
    c.on_timer(10.0)
    probe = lseg(ISS, RISS + 1)  # SEG.SEQ = SND.UNA - 1 (RFC 1122 4.2.3.6)
    assert c.output(10.0) == [probe]
    c.on_segment(rseg(RISS + 1, ISS + 1), 10.01)  # answered: idle timer restarts
    assert c.next_deadline() == pytest.approx(20.01)
    c.on_timer(20.01)
    assert c.output(20.01) == [probe]
    c.on_timer(22.01)
    assert c.output(22.01) == [probe]
    c.on_timer(24.01)
    assert c.state is TcpState.CLOSED
    assert closed_reason(c) == "timeout"


def test_no_keepalive_by_default() -> None:
    c = established()
    assert c.next_deadline() is None


def test_initial_window_one_segment_after_syn_loss() -> None:
    c = TcpConnection.connect(plain(), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    c.output(0.0)
    c.on_timer(1.0)
    c.output(1.0)
    c.on_segment(rseg(RISS, ISS + 1, SYN | ACK, 65535, options=TcpOptions(mss=1000)), 1.01)
    assert c.cc.cwnd == 1000
    c.send(b"x" * 5000, 1.02)
    assert [len(s.payload) for s in c.output(1.02)] == [1000]


def test_rst_in_last_ack() -> None:
    c = established()
    c.on_segment(rseg(RISS + 1, ISS + 1, FIN | ACK), 1.0)
    c.shutdown(1.0)
    c.output(1.0)
    c.take_events()
    c.on_segment(rseg(RISS + 2, 0, RST), 1.1)
    assert c.state is TcpState.CLOSED
    assert c.take_events() == [Closed("normal")]


def test_rst_exact_in_time_wait_closes_without_rfc1337() -> None:
    c = established(plain(rfc1337=False))
    c.shutdown(1.0)
    c.output(1.0)
    c.on_segment(rseg(RISS + 1, ISS + 2, FIN | ACK), 1.01)
    assert c.state is TcpState.TIME_WAIT
    c.take_events()
    c.on_segment(rseg(RISS + 2, 0, RST), 1.1)
    assert c.state is TcpState.CLOSED
    assert c.take_events() == []


def test_segment_without_ack_dropped() -> None:
    c = established()
    c.on_segment(rseg(RISS + 1, 0, PSH, payload=b"noack"), 1.0)
    assert c.recv_available == 0
    assert c.counters["dropped_no_ack"] == 1


def test_old_ack_beyond_max_window_dropped() -> None:
    c = established(peer_window=1000)
    c.send(b"d" * 900, 1.0)
    c.output(1.0)
    c.on_segment(rseg(RISS + 1, ISS + 901, window=1000), 1.1)
    assert c.max_snd_wnd == 1000
    # RFC 5961 (5.2): an ACK below SND.UNA - MAX.SND.WND
    c.on_segment(rseg(RISS + 1, ISS - 200, window=1000, payload=b"x"), 1.2)
    assert c.counters["dropped_bad_ack"] == 1
    assert c.recv_available == 0  # RFC 5961 (5.2): the whole segment is dropped
    assert c.output(1.2) == [lseg(ISS + 901, RISS + 1)]


def test_data_events_coalesced_per_batch() -> None:
    c = established()
    for i in range(5):
        c.on_segment(rseg(RISS + 1 + 10 * i, ISS + 1, payload=b"0123456789"), 1.0)
    assert c.take_events() == [DataReceived(50)]
    assert c.take_events() == []


def test_timestamps_on_every_segment_and_rtt_from_echo_after_retransmit() -> None:
    cfg = TcpConfig(window_scale=False, sack=False, recv_buffer=WIN, msl=1.0)
    syn = rseg(RISS, 0, SYN, 65535, options=TcpOptions(mss=1460, timestamp=(100, 0)))
    c = TcpConnection.accept_syn(cfg, LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    (synack,) = c.output(0.0)
    assert synack.options.timestamp == (c._ts_val(0.0), 100)
    c.on_segment(rseg(RISS + 1, ISS + 1, options=TcpOptions(timestamp=(101, c._ts_val(0.0)))), 0.0)
    c.send(b"abc", 1.0)
    (first,) = c.output(1.0)
    assert first.options == TcpOptions(timestamp=(c._ts_val(1.0), 101))
    c.on_timer(1.2)
    (again,) = c.output(1.2)
    assert again.options.timestamp == (c._ts_val(1.2), 101)
    samples = c.rtt.samples
    # The ACK echoes the retransmission's TSval: an unambiguous sample of 50 ms.
    c.on_segment(rseg(RISS + 1, ISS + 4, options=TcpOptions(timestamp=(150, c._ts_val(1.2)))), 1.25)
    assert c.rtt.samples == samples + 1


def test_send_after_shutdown_refused_and_partial_recv() -> None:
    c = established()
    c.on_segment(rseg(RISS + 1, ISS + 1, payload=b"abcdef"), 1.0)
    assert c.recv(2) == b"ab"
    assert c.recv(0) == b""
    assert c.recv() == b"cdef"
    c.shutdown(1.0)
    assert c.send(b"late", 1.0) == 0
    assert c.send_space() == 0


def test_time_wait_accepts_new_syn_only_when_newer() -> None:
    c = established()
    c.shutdown(1.0)
    c.output(1.0)
    c.on_segment(rseg(RISS + 1, ISS + 2, FIN | ACK), 1.01)
    assert c.state is TcpState.TIME_WAIT
    assert c.accepts_new_syn(rseg(RISS + 100_000, 0, SYN))
    assert not c.accepts_new_syn(rseg(RISS - 100, 0, SYN))
    assert not c.accepts_new_syn(rseg(RISS + 100_000, 0, SYN | ACK))
    assert not established().accepts_new_syn(rseg(RISS + 100_000, 0, SYN))


def test_shutdown_before_connected_sends_fin_after_handshake() -> None:
    c = TcpConnection.connect(plain(), LIP, LPORT, RIP, RPORT, ISS, 0.0)
    c.output(0.0)
    c.send(b"req", 0.0)
    c.shutdown(0.0)
    c.on_segment(rseg(RISS, ISS + 1, SYN | ACK, 30000, options=TcpOptions(mss=1460)), 0.01)
    assert c.state is TcpState.FIN_WAIT_1
    assert c.output(0.01) == [lseg(ISS + 1, RISS + 1, FIN | PSH | ACK, payload=b"req")]


def test_rfc1337_time_wait_ignores_rst_by_default() -> None:
    """RFC 1337: a RST (in window or not) does not end TIME-WAIT; 2*MSL still runs out."""
    c = established()
    c.shutdown(1.0)
    assert c.output(1.0) == [lseg(ISS + 1, RISS + 1, FIN | ACK)]
    c.on_segment(rseg(RISS + 1, ISS + 2, FIN | ACK), 1.01)
    assert c.state is TcpState.TIME_WAIT
    assert c.output(1.01) == [lseg(ISS + 2, RISS + 2, window=WIN - 1)]
    c.take_events()
    c.on_segment(rseg(RISS + 2, 0, RST), 1.1)  # exact RCV.NXT: would assassinate
    c.on_segment(rseg(RISS + 2 + 100, 0, RST), 1.2)  # in window, not exact
    assert c.state is TcpState.TIME_WAIT
    assert c.output(1.2) == []  # ignored: no challenge ACK either
    assert c.counters["time_wait_rst_ignored"] == 2
    # A retransmitted FIN is still answered; the wait ends at 2*MSL as usual.
    c.on_segment(rseg(RISS + 1, ISS + 2, FIN | ACK), 1.3)
    assert c.output(1.3) == [lseg(ISS + 2, RISS + 2, window=WIN - 1)]
    c.on_timer(1.3 + 2.0)
    assert c.state is TcpState.CLOSED
    assert c.take_events() == []
