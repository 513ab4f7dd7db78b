"""RACK's in-order ACK path (``Rack._on_ack_in_order``) gives exactly what the record-by-record
path gives: two logs fed the same transmissions, retransmissions, RTOs, SACKs and cumulative ACKs at
the same times, one of them never taking the short path, end in the same state after every
step (RFC 8985 6.2 steps 1-5)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from anp_async.proto.tcp.rack import MAX_RECORDS, Rack
from anp_async.proto.tcp.sack import SackScoreboard


class _FullOnly(Rack):
    """A log that always walks its records one by one."""

    def _on_ack_in_order(
        self, snd_una: int, now: float, in_recovery: bool, srtt: float | None
    ) -> bool:
        return self._on_ack_full(snd_una, SackScoreboard(), now, None, False, snd_una, in_recovery, srtt)


def _state(r: Rack) -> tuple[object, ...]:
    segs = tuple((s.start, s.end, s.xmit, s.rtx, s.sacked, s.lost) for s in r.segs)
    return (segs, *(getattr(r, name) for name in Rack.__slots__ if name != "segs"))


op = st.one_of(
    st.tuples(st.just("send"), st.integers(1, 3000)),
    st.tuples(st.just("rtx"), st.integers(0, 4000), st.integers(1, 3000)),
    st.tuples(st.just("ack"), st.integers(0, 5000)),
    st.tuples(st.just("rto"), st.just(0)),
    st.tuples(st.just("sack"), st.integers(0, 4000), st.integers(1, 3000)),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.0005, 0.01, 0.2])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=60), st.booleans())
def test_in_order_path_matches_full_walk(ops: list[tuple], in_recovery: bool) -> None:
    fast, full = Rack(), _FullOnly()
    sb = SackScoreboard()
    una = nxt = 0
    now = 1.0
    for o in ops:
        kind = o[0]
        if kind == "send":
            for r in (fast, full):
                r.on_sent(nxt, nxt + o[1], now, False)
            nxt += o[1]
        elif kind == "rtx" and nxt > una:
            start = una + o[1] % (nxt - una)
            end = min(nxt, start + o[2])
            for r in (fast, full):
                r.on_sent(start, end, now, True)
        elif kind == "sack" and nxt > una:
            start = una + o[1] % (nxt - una)
            sb.update([(start, min(nxt, start + o[2]))], una, nxt)
            got = [r.on_ack(una, sb, now, None, False, nxt, in_recovery, 0.01) for r in (fast, full)]
            assert got[0] == got[1]
        elif kind == "ack":
            una = min(nxt, una + o[1])
            sb.advance(una)
            got = [r.on_ack(una, sb, now, None, False, nxt, in_recovery, 0.01) for r in (fast, full)]
            assert got[0] == got[1]
        elif kind == "rto":
            for r in (fast, full):
                r.on_rto(una)
        elif kind == "wait":
            now += o[1]
        assert _state(fast) == _state(full)
        assert len(fast.segs) <= MAX_RECORDS


def test_in_order_ack_below_a_later_retransmission_still_detects_loss() -> None:
    """After a retransmitted record is acked (RACK.xmit_ts is its late retransmission), the
    log is in order again, yet the originals still waiting were sent before RACK.xmit_ts:
    the short path must run step 5 and deem them lost once RTT + reo_wnd has passed."""
    fast, full = Rack(), _FullOnly()
    sb = SackScoreboard()
    for r in (fast, full):
        r.on_sent(0, 1000, 1.0, False)
        r.on_ack(1000, sb, 1.01, None, False, 1000)  # min_rtt 10 ms
        r.on_sent(1000, 2000, 1.02, False)
        r.on_sent(2000, 3000, 1.024, False)
        r.on_sent(1000, 2000, 1.025, True)  # the first one resent
        # Its retransmission is acked (11 ms: not ambiguous); [2000, 3000) may still be
        # reordered: the timer waits, and the log has no retransmitted record left.
        assert r.on_ack(2000, sb, 1.036, None, False, 3000) is False
    assert fast.n_rtx == 0 and fast.lost_bytes == 0 and fast.xmit_ts == 1.025
    assert fast.reo_at is not None
    got = [r.on_ack(2500, sb, 1.05, None, False, 3000) for r in (fast, full)]
    assert got == [True, True]  # [2500, 3000) was sent before 1.025 and its time is up
    assert _state(fast) == _state(full)
