"""SACK (RFC 2018) and SACK-based loss recovery (RFC 6675): scoreboard and engine.

Exact-segment tests in the style of test_tcp_connection.py (local ISS 1000, remote ISS
5000), plus two-engine runs on the simulated link (tcp_harness) comparing SACK and NewReno.
"""

from __future__ import annotations

import hashlib
import random

from anp_async.proto.tcp import ACK, SYN, TcpConfig, TcpConnection, TcpOptions, TcpSegment
from anp_async.proto.tcp.sack import SackScoreboard
from tests.unit.tcp_harness import TcpPair

LIP = bytes([10, 0, 0, 2])
RIP = bytes([10, 0, 0, 1])
LPORT, RPORT = 80, 49500
ISS, RISS = 1000, 5000
M = 0xFFFFFFFF
MSS = 1000


def cfg(**kw) -> TcpConfig:
    # RFC 6675 on its own: RACK-TLP (on by default) is tested in test_tcp_rack.py.
    base = dict(timestamps=False, sack=True, window_scale=False, mss=MSS, rto_min=0.2, rack=False)
    base.update(kw)
    return TcpConfig(**base)


def rseg(seq, ack, flags=ACK, window=65535, payload=b"", sack=()) -> TcpSegment:
    opts = TcpOptions(sack_blocks=tuple((a & M, b & M) for a, b in sack)) if sack else None
    return TcpSegment(RPORT, LPORT, seq & M, ack & M, flags, window, payload, opts)


def established(c: TcpConfig | None = None, sack_peer: bool = True) -> TcpConnection:
    syn = rseg(RISS, 0, SYN)
    syn.options = TcpOptions(mss=MSS, sack_permitted=sack_peer)
    conn = TcpConnection.accept_syn(c or cfg(), LIP, LPORT, RIP, RPORT, syn, ISS, 0.0)
    conn.output(0.0)
    conn.on_segment(rseg(RISS + 1, ISS + 1), 0.01)
    conn.take_events()
    return conn


def seg_no(i: int) -> int:
    """Wire sequence number of data segment ``i`` (0-based, MSS-sized)."""
    return ISS + 1 + i * MSS


def data_segs(out: list[TcpSegment]) -> list[int]:
    return [(s.seq - ISS - 1) // MSS for s in out if s.payload]


# ------------------------------------------------------------------ scoreboard


def test_scoreboard_merges_and_advances() -> None:
    sb = SackScoreboard()
    assert sb.update([(300, 400), (100, 200)], 0, 1000) == 200
    assert sb.blocks == [(100, 200), (300, 400)]
    assert sb.update([(150, 320)], 0, 1000) == 100  # bridges both, 100 bytes new
    assert sb.blocks == [(100, 400)] and sb.sacked == 300
    assert sb.update([(100, 400)], 0, 1000) == 0  # repeated report
    sb.advance(250)
    assert sb.blocks == [(250, 400)] and sb.sacked == 150
    sb.advance(500)
    assert not sb and sb.sacked == 0


def test_scoreboard_validates_blocks() -> None:
    sb = SackScoreboard()
    sb.update([(50, 80)], 100, 1000)  # D-SACK below SND.UNA: tolerated, ignored
    sb.update([(90, 150)], 100, 1000)  # D-SACK straddling SND.UNA: new part kept
    sb.update([(900, 1200)], 100, 1000)  # beyond SND.MAX
    sb.update([(500, 400)], 100, 1000)  # start after end
    assert sb.blocks == [(100, 150)]
    assert sb.dsack == 2 and sb.invalid == 2


def test_is_lost_dupthresh_and_pipe() -> None:
    sb = SackScoreboard()
    mss = 100
    # Segments 0..9 of 100 bytes sent; 1 and 5 lost, the others SACKed (0 is SND.UNA: lost).
    sb.update([(100, 200)], 0, 1000)
    assert not sb.is_lost(0, 0, mss)  # one segment above: not yet
    sb.update([(200, 300), (300, 400)], 0, 1000)
    assert sb.is_lost(0, 0, mss)  # 3 segments (> 2*SMSS bytes) above
    sb.update([(600, 700), (700, 800)], 0, 1000)
    holes = sb.holes(0, mss)
    assert holes == [(0, 100, True), (400, 600, False)]
    sb.update([(800, 900)], 0, 1000)
    assert sb.holes(0, mss)[1] == (400, 600, True)
    # Pipe: lost holes do not count; the unSACKed tail 900..1000 does.
    assert sb.pipe(0, 1000, 0, mss) == 100
    # Retransmitting 0..100 puts it back in the pipe.
    assert sb.pipe(0, 1000, 100, mss) == 200
    assert sb.next_seg(0, 0, mss) == (0, 100, True)
    assert sb.next_seg(100, 0, mss) == (400, 500, True)
    assert sb.next_seg(600, 0, mss) is None


def test_scoreboard_bounded() -> None:
    sb = SackScoreboard(max_blocks=8)
    for i in range(100):
        sb.update([(i * 20, i * 20 + 10)], 0, 10_000)
    assert len(sb) == 8
    assert sb.sacked == 80


# ------------------------------------------------------------------ engine


def test_sack_recovery_retransmits_only_the_holes() -> None:
    c = established()
    data = bytes(range(256)) * 40  # 10 segments of 1000 (+240)
    c.send(data[: 10 * MSS], 1.0)
    out = c.output(1.0)
    assert data_segs(out) == list(range(10))
    # Segments 1 and 5 are lost. The receiver SACKs what arrived, most recent first.
    una = seg_no(1)
    c.on_segment(rseg(RISS + 1, una), 1.05)  # ACK of segment 0
    assert c.output(1.05) == []
    sacks = []
    for i in (2, 3, 4, 6, 7, 8, 9):
        lo = seg_no(2) if i < 5 else seg_no(6)
        blocks = [(lo, seg_no(i + 1))]
        if i > 5:
            blocks.append((seg_no(2), seg_no(5)))
        sacks.append(rseg(RISS + 1, una, sack=blocks))
    # RFC 6675: after three SACKed segments above it, segment 1 is lost: recovery starts.
    for s in sacks[:3]:
        c.on_segment(s, 1.06)
    out = c.output(1.06)
    assert data_segs(out) == [1]
    assert c.recovery.sack_rec and c.counters["sack_recoveries"] == 1
    assert c.cc.cwnd == c.cc.ssthresh == 9 * MSS // 2  # RFC 6675 (4.2): FlightSize / 2
    for s in sacks[3:]:
        c.on_segment(s, 1.07)
    # Segment 5 is now lost too (3 SACKed segments above it); never a SACKed one resent.
    out = c.output(1.07)
    assert data_segs(out) == [5]
    assert c.counters["retransmits"] == 2
    assert c.bytes_retrans == 2 * MSS
    # Partial ACK (hole 1 filled): nothing more to retransmit.
    c.on_segment(rseg(RISS + 1, seg_no(5), sack=[(seg_no(6), seg_no(10))]), 1.1)
    assert data_segs(c.output(1.1)) == []
    assert c.recovery.in_recovery
    # Full ACK ends recovery with cwnd = ssthresh.
    c.on_segment(rseg(RISS + 1, seg_no(10)), 1.12)
    assert not c.recovery.in_recovery and not c.recovery.sack_rec
    assert c.cc.cwnd == 9 * MSS // 2
    assert c.counters["timeouts"] == 0


def test_newreno_without_sack_negotiated() -> None:
    c = established(sack_peer=False)
    assert not c.sack_ok
    c.send(b"x" * 10 * MSS, 1.0)
    c.output(1.0)
    for _ in range(3):
        c.on_segment(rseg(RISS + 1, seg_no(0)), 1.05)
    assert data_segs(c.output(1.05)) == [0]
    assert c.recovery.in_recovery and not c.recovery.sack_rec
    assert c.cc.cwnd == 8 * MSS  # RFC 5681 inflation: ssthresh + 3 * SMSS


def test_invalid_sack_blocks_counted_and_ignored() -> None:
    c = established()
    c.send(b"y" * 3 * MSS, 1.0)
    c.output(1.0)
    c.on_segment(rseg(RISS + 1, seg_no(0), sack=[(seg_no(2), seg_no(5))]), 1.05)  # past SND.MAX
    c.on_segment(rseg(RISS + 1, seg_no(0), sack=[(ISS - 5000, ISS - 4000)]), 1.05)
    assert c.counters["sack_blocks_invalid"] == 1
    assert c.counters["dsack_rx"] == 1
    assert not c.recovery.sb
    assert c.counters["dup_acks"] == 2  # still duplicate ACKs by RFC 5681's definition


def test_rto_go_back_n_skips_sacked_data() -> None:
    c = established()
    c.send(b"z" * 6 * MSS, 1.0)
    c.output(1.0)
    # Only segment 3 arrived (one SACK block: no recovery yet), then silence.
    c.on_segment(rseg(RISS + 1, seg_no(0), sack=[(seg_no(3), seg_no(4))]), 1.05)
    c.output(1.05)
    t = c.next_deadline()
    c.on_timer(t)
    # cwnd = 1 SMSS: segment 0.
    assert data_segs(c.output(t)) == [0]
    c.on_segment(rseg(RISS + 1, seg_no(1), sack=[(seg_no(3), seg_no(4))]), t + 0.01)
    c.on_segment(rseg(RISS + 1, seg_no(2), sack=[(seg_no(3), seg_no(4))]), t + 0.02)
    # Segment 1 arrived late; slow start resends 2, 4 and 5 but never the SACKed 3.
    sent = data_segs(c.output(t + 0.02))
    c.on_segment(rseg(RISS + 1, seg_no(3), sack=[(seg_no(3), seg_no(4))]), t + 0.03)
    sent += data_segs(c.output(t + 0.03))
    assert sorted(sent) == [2, 4, 5]
    assert c.bytes_retrans == 4 * MSS  # 0, 2, 4, 5: never the SACKed segment


# ------------------------------------------------------------------ two engines


def _transfer(
    sack: bool, drop_idx: set[int], n: int = 400_000, cong: str = "newreno", rack: bool = False
):
    conf = TcpConfig(sack=sack, mss=1460, rto_min=0.2, congestion=cong, rack=rack)

    def drop(direction: str, seg: TcpSegment, idx: int) -> bool:
        return direction == "ab" and idx in drop_idx

    pair = TcpPair(conf, TcpConfig(sack=sack), delay=0.01, drop=drop, wire=True)
    data = random.Random(5).randbytes(n)
    pair.a.to_send = memoryview(data)
    pair.a.shutdown_when_sent = True
    assert pair.run(lambda: pair.b.eof, max_time=120)
    assert hashlib.sha256(pair.b.received).digest() == hashlib.sha256(data).digest()
    return pair.a.conn, pair.now


def test_sack_vs_newreno_on_the_simulated_link() -> None:
    # Four losses in each of three windows: NewReno repairs one hole per round trip
    # (RFC 6582 partial ACKs), SACK repairs a window's holes in one (RFC 6675).
    drops = {40, 44, 48, 52, 120, 125, 130, 135, 200, 203, 206, 209}
    with_sack, t_sack = _transfer(True, drops)
    without, t_plain = _transfer(False, drops)
    assert with_sack.sack_ok and not without.sack_ok
    assert with_sack.counters["sack_recoveries"] > 0
    assert with_sack.counters["partial_acks"] < without.counters["partial_acks"]
    assert with_sack.bytes_retrans <= without.bytes_retrans
    assert with_sack.bytes_retrans == with_sack.counters["retransmits"] * 1448  # holes only
    assert t_sack < t_plain


def test_sack_with_cubic_delivers() -> None:
    rng = random.Random(3)
    drops = {i for i in range(5, 330) if rng.random() < 0.08}
    conn, _ = _transfer(True, drops, cong="cubic")
    assert conn.cc.name == "cubic"
    assert conn.counters["sack_retransmits"] > 0
