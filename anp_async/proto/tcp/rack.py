"""RACK-TLP loss detection (RFC 8985), sans-I/O.

RACK ("recent acknowledgment") marks a segment lost when a segment *sent after it* was
delivered (cumulatively ACKed or SACKed) at least ``RACK.rtt + RACK.reo_wnd`` after it was
sent: losses are inferred from time, not from counting duplicate ACKs, so a lost
retransmission, a short flight or reordering are handled alike. TLP ("tail loss probe")
sends one probe after about two round trips of silence, so that a lost tail gets an ACK
with SACK feedback (and RACK repairs it) instead of waiting for the retransmission timer.

:class:`Rack` keeps one record per transmitted segment (its sequence range, last transmit
time, whether it was retransmitted, SACKed or is deemed lost) and the RACK/TLP variables of
RFC 8985 (5). It never builds a segment: the connection tells it what was sent and what was
acknowledged, asks it which ranges are lost (:meth:`Rack.lost_ranges`) and how much is in
flight (:meth:`Rack.pipe`), and reads its two deadlines (``reo_at``: the reordering timer,
``pto_at``: the probe timer). Sequence numbers are the connection's absolute ones; times are
float seconds passed in.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from .minfilter import WindowedMin
from .sack import DUP_THRESH, SackScoreboard

__all__ = ["Rack", "TLP_WCDELACKT"]

# RFC 8985 (7.2): WCDelAckT, the worst-case delayed-ACK time added to the PTO when only one
# segment is in flight (its ACK may be delayed); 200 ms RECOMMENDED.
TLP_WCDELACKT = 0.2
# RFC 8985 (7.2): the PTO without an RTT sample.
TLP_PTO_NO_RTT = 1.0
# RFC 8985 (6.2 step 4): reo_wnd_mult is reset after this many recoveries without D-SACK.
REO_WND_PERSIST = 16
# RFC 8985 (6.2 step 4): RACK.reo_wnd starts at min_RTT / 4.
REO_WND_DIVISOR = 4.0
#: Seconds over which RACK.min_RTT is the minimum (Linux: net.ipv4.tcp_min_rtt_wlen).
MIN_RTT_WINDOW = 300.0
# Bounded per connection: past this many records a new transmission joins the last one and
# records are no longer split at SACK edges (coarser, never unbounded).
MAX_RECORDS = 8192
_EPS = 1e-6  # float time: a microsecond is "at the same time"


class _Sent:
    """One transmitted range (a segment, or a TSO super-segment) and its RACK state."""

    __slots__ = ("start", "end", "xmit", "rtx", "sacked", "lost")

    def __init__(self, start: int, end: int, xmit: float, rtx: bool) -> None:
        self.start = start
        self.end = end
        self.xmit = xmit  # RFC 8985 (5.2) Segment.xmit_ts: the latest transmission
        self.rtx = rtx  # Segment.retransmitted
        self.sacked = False
        self.lost = False

    def __repr__(self) -> str:
        flags = ("R" if self.rtx else "") + ("S" if self.sacked else "") + ("L" if self.lost else "")
        return f"<{self.start}-{self.end} @{self.xmit:.4f} {flags}>"


def _sent_after(t1: float, end1: int, t2: float, end2: int) -> bool:
    """RFC 8985 (6.2) RACK_sent_after: sent later, or at the same time with a higher end."""
    return t1 > t2 or (t1 == t2 and end1 > end2)


class Rack:
    """RACK-TLP state of one connection (RFC 8985 (5.2) variables plus the segment log)."""

    __slots__ = (
        "segs",
        "xmit_ts",
        "end_seq",
        "rtt",
        "_min_rtt",
        "fack",
        "reordering_seen",
        "reo_wnd_mult",
        "reo_wnd_persist",
        "dsack_round",
        "reo_at",
        "pto_at",
        "tlp_end",
        "tlp_is_retrans",
        "tlp_due",
        "lost_bytes",
        "n_rtx",
        "n_sacked",
        "dsack_seen",
    )

    def __init__(self) -> None:
        self.segs: list[_Sent] = []  # sorted by start, disjoint, all above SND.UNA
        # RFC 8985 (5.2): the most recently sent segment known delivered.
        self.xmit_ts: float | None = None
        self.end_seq = 0
        self.rtt = 0.0  # RACK.rtt: the RTT of that segment
        # RFC 8985 (6.2 step 4): a windowed min-filtered RTT, which follows a path that
        # became longer (a global minimum would keep the reordering window too small).
        self._min_rtt = WindowedMin(MIN_RTT_WINDOW)
        self.fack = 0  # RACK.fack: the highest end delivered
        self.reordering_seen = False
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = REO_WND_PERSIST
        self.dsack_round: int | None = None
        self.reo_at: float | None = None  # the RACK reordering timer
        self.pto_at: float | None = None  # the TLP probe timer
        # RFC 8985 (7): TLP.end_seq (SND.NXT when the probe went; None: no episode) and
        # TLP.is_retrans.
        self.tlp_end: int | None = None
        self.tlp_is_retrans = False
        self.tlp_due = False  # the PTO fired: output() sends the probe
        self.lost_bytes = 0  # bytes marked lost and not yet retransmitted
        self.n_rtx = 0  # records that were retransmitted (time order != sequence order)
        self.n_sacked = 0  # records SACKed (RACK.segs_sacked)
        self.dsack_seen = 0  # the scoreboard's D-SACK count at the last ACK

    @property
    def min_rtt(self) -> float:
        """RACK.min_RTT: the smallest RTT of the last :data:`MIN_RTT_WINDOW` seconds."""
        return self._min_rtt.value

    # ----------------------------------------------------------- transmissions

    def on_sent(self, start: int, end: int, now: float, retransmit: bool) -> None:
        """``[start, end)`` left at ``now`` (a retransmission if it was sent before)."""
        if end <= start:
            return
        segs = self.segs
        if not retransmit and (not segs or segs[-1].end <= start):
            if len(segs) >= MAX_RECORDS:
                last = segs[-1]
                last.end = end
                last.xmit = now
                return
            segs.append(_Sent(start, end, now, False))
            return
        # A retransmission (or new data overlapping records): split records at the edges
        # and restamp the ones inside (RFC 8985 (6.1): xmit_ts is the latest transmission).
        i = self._split_at(start)
        self._split_at(end)
        covered = start
        while i < len(segs) and segs[i].start < end:
            s = segs[i]
            if s.start > covered:
                # A gap in the log (a record forgotten at the cap): log it now.
                segs.insert(i, _Sent(covered, s.start, now, True))
                self.n_rtx += 1
                i += 1
                continue
            if s.lost:
                s.lost = False
                self.lost_bytes -= s.end - s.start
            if not s.rtx:
                s.rtx = True
                self.n_rtx += 1
            s.xmit = now
            covered = s.end
            i += 1
        if covered < end:
            segs.insert(i, _Sent(covered, end, now, retransmit))
            if retransmit:
                self.n_rtx += 1

    def _split_at(self, seq: int) -> int:
        """Split the record holding ``seq`` so one starts there; the index of that one
        (or of the first record starting after ``seq``)."""
        segs = self.segs
        i = bisect_right(segs, seq, key=_start) - 1
        if i < 0:
            return 0
        s = segs[i]
        if s.start == seq:
            return i
        if seq >= s.end:
            return i + 1
        if len(segs) >= MAX_RECORDS:
            return i  # at the bound: no split, the record stays whole (coarser, bounded)
        tail = _Sent(seq, s.end, s.xmit, s.rtx)
        tail.sacked = s.sacked
        tail.lost = s.lost
        s.end = seq
        segs.insert(i + 1, tail)
        if s.rtx:
            self.n_rtx += 1
        if s.sacked:
            self.n_sacked += 1
        return i + 1

    # ----------------------------------------------------------- acknowledgments

    def on_ack(
        self,
        snd_una: int,
        sb: SackScoreboard,
        now: float,
        echo_at: float | None,
        dsack: bool,
        snd_nxt: int,
        in_recovery: bool = False,
        srtt: float | None = None,
    ) -> bool:
        """Records delivered by SND.UNA and the scoreboard: RFC 8985 (6.2) steps 1-5.

        ``echo_at`` is when the segment whose TSval this ACK echoes was sent (None without
        timestamps), ``dsack`` whether the ACK carried a D-SACK block. Returns True when
        some record was newly marked lost.
        """
        if not (sb.blocks or dsack or self.n_rtx or self.n_sacked or self.lost_bytes):
            return self._on_ack_in_order(snd_una, now, in_recovery, srtt)
        return self._on_ack_full(snd_una, sb, now, echo_at, dsack, snd_nxt, in_recovery, srtt)

    def _on_ack_full(
        self,
        snd_una: int,
        sb: SackScoreboard,
        now: float,
        echo_at: float | None,
        dsack: bool,
        snd_nxt: int,
        in_recovery: bool,
        srtt: float | None,
    ) -> bool:
        """``on_ack`` record by record: SACKed, lost and retransmitted records, D-SACK."""
        segs = self.segs
        delivered: list[_Sent] = []
        k = 0
        n = len(segs)
        while k < n and segs[k].end <= snd_una:
            s = segs[k]
            if not s.sacked:
                delivered.append(s)
            k += 1
        if k:
            for s in segs[:k]:
                self._forget(s)
            del segs[:k]
        if segs and segs[0].start < snd_una:
            s = segs[0]
            if s.lost:
                self.lost_bytes -= snd_una - s.start
            s.start = snd_una
            if not s.sacked:
                delivered.append(s)
        if sb.blocks:
            self._mark_sacked(sb, delivered)
        # RFC 8985 (6.2 step 4): D-SACK widens the reordering window, once per round trip.
        if self.dsack_round is not None and snd_una >= self.dsack_round:
            self.dsack_round = None
        if dsack and self.dsack_round is None:
            self.dsack_round = snd_nxt
            self.reo_wnd_mult += 1
            self.reo_wnd_persist = REO_WND_PERSIST
            self.reordering_seen = True
        for s in delivered:
            self._update_rtt(s, now, echo_at)
        if not delivered or self.xmit_ts is None:
            return False
        return self.detect_loss(now, in_recovery, srtt) if segs else False

    def _on_ack_in_order(
        self, snd_una: int, now: float, in_recovery: bool, srtt: float | None
    ) -> bool:
        """``on_ack`` when nothing is SACKed, lost or retransmitted and no D-SACK came: the
        records are in transmission order and the cumulative ACK delivers a prefix of them.
        Steps 2-3 of RFC 8985 (6.2) over that prefix reduce to its ends: the last record is
        the latest sent (it alone sets RACK.rtt/xmit_ts/end_seq, and its RTT is the least),
        the first alone can end below RACK.fack (reordering). The same result as the loop in
        ``on_ack``, without a list or a call per record; anything unusual takes that loop."""
        if self.dsack_round is not None and snd_una >= self.dsack_round:
            self.dsack_round = None
        segs = self.segs
        if not segs or segs[0].start >= snd_una:
            return False  # nothing newly delivered
        first = segs[0]
        k = 0
        n = len(segs)
        while k < n and segs[k].end <= snd_una:
            k += 1
        if k < n and segs[k].start < snd_una:
            last = segs[k]  # partly delivered: it stays, trimmed to SND.UNA
            last.start = snd_una
        else:
            last = segs[k - 1]
        if k:
            del segs[:k]  # nothing lost, retransmitted or SACKed among them: no counts move
        rtt = now - last.xmit
        self._min_rtt.update(now, rtt)
        if self.xmit_ts is None or _sent_after(last.xmit, last.end, self.xmit_ts, self.end_seq):
            self.rtt = rtt
            self.xmit_ts = last.xmit
            self.end_seq = last.end
        if first.end < self.fack:
            self.reordering_seen = True
        if last.end > self.fack:
            self.fack = last.end
        if not segs:
            return False
        xt = self.xmit_ts
        s = segs[0]
        if xt is not None and not (xt > s.xmit or (xt == s.xmit and self.end_seq > s.end)):
            # Step 5 (detect_loss) would stop at the first record left: it was not sent
            # before RACK.xmit_ts, nor any after it (transmission order): nothing to mark
            # lost, no reordering timer.
            self.reo_at = None
            return False
        return self.detect_loss(now, in_recovery, srtt)

    def _forget(self, s: _Sent) -> None:
        if s.lost:
            self.lost_bytes -= s.end - s.start
        if s.rtx:
            self.n_rtx -= 1
        if s.sacked:
            self.n_sacked -= 1

    def _mark_sacked(self, sb: SackScoreboard, delivered: list[_Sent]) -> None:
        """Records covered by SACKed ranges become delivered (split at block edges)."""
        for a, b in sb.blocks:
            i = self._split_at(a)
            self._split_at(b)
            segs = self.segs
            while i < len(segs) and segs[i].end <= b:
                s = segs[i]
                if not s.sacked and s.start >= a:  # (a record left whole at the bound is not)
                    s.sacked = True
                    self.n_sacked += 1
                    if s.lost:
                        s.lost = False
                        self.lost_bytes -= s.end - s.start
                    delivered.append(s)
                i += 1

    def _update_rtt(self, s: _Sent, now: float, echo_at: float | None) -> None:
        """RFC 8985 (6.2) step 2 (RACK.rtt, RACK.xmit_ts) and step 3 (reordering)."""
        rtt = now - s.xmit
        if s.rtx and (
            (echo_at is not None and echo_at < s.xmit - 0.001) or rtt < self.min_rtt - _EPS
        ):
            # Step 2: an ACK of the original transmission, or too quick to be of the
            # retransmission: ambiguous, no RTT from it.
            return
        self._min_rtt.update(now, rtt)
        if self.xmit_ts is None or _sent_after(s.xmit, s.end, self.xmit_ts, self.end_seq):
            self.rtt = rtt
            self.xmit_ts = s.xmit
            self.end_seq = s.end
        # Step 3: a never-retransmitted segment delivered below the highest one delivered
        # was reordered (not lost) on the way.
        if s.end < self.fack:
            if not s.rtx:
                self.reordering_seen = True
        else:
            self.fack = s.end

    def reo_wnd(self, in_recovery: bool, srtt: float | None) -> float:
        """RFC 8985 (6.2 step 4) RACK_update_reo_wnd: the reordering window."""
        if not self.reordering_seen and (in_recovery or self.n_sacked >= DUP_THRESH):
            # Like DupThresh: with no reordering seen, don't wait once in recovery or
            # once DupThresh segments were SACKed.
            return 0.0
        w = self.reo_wnd_mult * (self.min_rtt / REO_WND_DIVISOR)
        if srtt is not None and srtt < w:
            w = srtt
        return w if math.isfinite(w) else 0.0

    def detect_loss(
        self, now: float, in_recovery: bool, srtt: float | None = None
    ) -> bool:
        """RFC 8985 (6.2 step 5) RACK_detect_loss: mark what a later-sent delivery proves
        lost; arm the reordering timer for what may still be reordered. True if any record
        was newly marked lost."""
        if self.xmit_ts is None:
            self.reo_at = None
            return False
        reo = self.reo_wnd(in_recovery, srtt)
        xt, xe, rtt = self.xmit_ts, self.end_seq, self.rtt
        timeout = 0.0
        newly = False
        ordered = self.n_rtx == 0  # then sequence order is transmission order
        for s in self.segs:
            if s.sacked or s.lost:
                continue
            if _sent_after(xt, xe, s.xmit, s.end):
                remaining = s.xmit + rtt + reo - now
                if remaining <= _EPS:
                    s.lost = True
                    self.lost_bytes += s.end - s.start
                    newly = True
                elif remaining > timeout:
                    timeout = remaining
            elif ordered:
                break
        # RFC 8985 (6.2 step 5): RACK.reo_timeout for the segments not yet deemed lost.
        self.reo_at = now + timeout if timeout > 0.0 else None
        return newly

    def on_recovery_exit(self) -> None:
        """RFC 8985 (6.2 step 4): after REO_WND_PERSIST recoveries, reset reo_wnd_mult."""
        self.reo_wnd_persist -= 1
        if self.reo_wnd_persist <= 0:
            self.reo_wnd_mult = 1
            self.reo_wnd_persist = REO_WND_PERSIST

    # ----------------------------------------------------------- timeouts

    def on_rto(self, snd_una: int) -> None:
        """RFC 8985 (6.3): on RTO every outstanding unSACKed segment is deemed lost (the
        go-back-N that follows resends them); the TLP episode ends."""
        for s in self.segs:
            if not s.sacked and not s.lost and s.end > snd_una:
                s.lost = True
                self.lost_bytes += s.end - s.start
        self.reo_at = None
        self.pto_at = None
        self.tlp_end = None
        self.tlp_due = False

    def undo_rto(self) -> None:
        """The timeout was spurious (RFC 3522): what ``on_rto`` deemed lost is in flight
        after all; RACK finds real losses among it by time again."""
        if self.lost_bytes:
            for s in self.segs:
                s.lost = False
            self.lost_bytes = 0

    # ----------------------------------------------------------- queries

    def pipe(self) -> int:
        """Bytes in flight: sent, not SACKed, not deemed lost (retransmissions count
        again once sent: their records are no longer lost)."""
        return sum(s.end - s.start for s in self.segs if not s.sacked and not s.lost)

    def lost_ranges(self, start: int) -> list[tuple[int, int]]:
        """Ranges deemed lost and not retransmitted since, at or above ``start``, in order."""
        out: list[tuple[int, int]] = []
        if not self.lost_bytes:
            return out
        for s in self.segs:
            if s.lost and s.end > start:
                a = s.start if s.start > start else start
                if out and out[-1][1] == a:
                    out[-1] = (out[-1][0], s.end)
                else:
                    out.append((a, s.end))
        return out

    # ----------------------------------------------------------- TLP

    def schedule_pto(
        self, now: float, srtt: float | None, flight: int, mss: int, rto_at: float | None
    ) -> None:
        """RFC 8985 (7.2): arm the probe timeout (the caller checked that a probe may go:
        SACK, open state, no episode running, data in flight)."""
        if srtt is not None:
            pto = 2.0 * srtt
            if flight <= mss:
                # RFC 8985 (7.2): the lone segment's ACK may be delayed.
                pto += TLP_WCDELACKT
        else:
            pto = TLP_PTO_NO_RTT
        at = now + pto
        if rto_at is not None and rto_at < at:
            # RFC 8985 (7.2): never later than the RTO would fire (the probe replaces it).
            at = rto_at
        self.pto_at = at

    def on_tlp_ack(self, snd_una: int, dsack: bool) -> bool:
        """RFC 8985 (7.4) TLP loss detection; True when the probe repaired a loss, so the
        congestion controller must react as to one loss."""
        end = self.tlp_end
        if end is None or snd_una < end:
            return False
        if not self.tlp_is_retrans:
            # A probe of new data: RACK sees any loss it reveals; the episode is over.
            self.tlp_end = None
            return False
        if dsack:
            # RFC 8985 (7.4.2): the D-SACK says both the original and the probe arrived.
            self.tlp_end = None
            return False
        if snd_una > end:
            # RFC 8985 (7.4.2): no D-SACK before the ACK passed the episode: the probe
            # repaired a loss.
            self.tlp_end = None
            return True
        return False


def _start(s: _Sent) -> int:
    return s.start
