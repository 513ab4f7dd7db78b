"""Loss recovery of one TCP connection (sans-I/O): fast retransmit, NewReno and SACK.

:class:`LossRecovery` keeps the state RFC 5681 (3.2), RFC 6582 (NewReno) and RFC 6675
(SACK-based recovery) need -- the duplicate-ACK count, whether a recovery runs and its
recovery point, the SACK scoreboard and HighRxt -- and decides what each ACK or timeout
does to it and to the congestion controller. It never builds a segment: the connection
asks it *what* to retransmit (:attr:`LossRecovery.rtx_one` for NewReno,
:meth:`LossRecovery.sack_picks` for RFC 6675) and sends it. Sequence numbers are the
connection's absolute ones (0 = our SYN).

With RACK-TLP (RFC 8985, :mod:`.rack`) enabled on a SACK connection, RACK decides what is
lost (by time, not by DupThresh) and when a recovery starts; the RFC 6675 machinery here
still paces the retransmissions by cwnd - pipe, with RACK's pipe and lost ranges.

A retransmission timeout that was spurious -- the segments were only delayed, as when the
first flights of a thousand connections wait in the NIC's queue longer than the minimum
RTO -- is detected with timestamps (Eifel, RFC 3522) and undone (the Eifel response, RFC
4015): :meth:`LossRecovery.save_for_undo` keeps what the timeout changes,
:meth:`LossRecovery.spurious_timeout` tells from the first ACK of new data whether it
answered a transmission older than the timeout, and the connection then resumes at
SND.MAX with the congestion state and an RTO that fits the delay it just saw.
"""

from __future__ import annotations

from ...counters import Counters
from .congestion import CongestionControl, initial_window
from .rack import Rack
from .sack import DUP_THRESH, SackScoreboard

#: At most this many retransmissions chosen from the scoreboard per output() call.
MAX_SACK_PICKS = 64
_TS_HALF = 1 << 31
_TS_MASK = 0xFFFFFFFF


class RtoUndo:
    """What a retransmission timeout changed, kept until the first ACK of new data says
    whether it was spurious (RFC 3522 (2), RFC 4015 (4) step (0))."""

    __slots__ = ("rtx_ts", "cc", "pipe_prev")

    def __init__(self, rtx_ts: int, cc: CongestionControl | None, pipe_prev: int) -> None:
        #: RFC 3522 (2) RetransmitTS: the TSval of the first retransmission (our TS clock
        #: at the timeout; every earlier transmission carries a smaller one).
        self.rtx_ts = rtx_ts
        #: The congestion controller as it was before the timeout (a copy).
        self.cc = cc
        #: RFC 4015 (4) step (0): pipe_prev = max(FlightSize, ssthresh).
        self.pipe_prev = pipe_prev


class LossRecovery:
    """Fast retransmit and loss recovery state; counts into the connection's counters."""

    __slots__ = ("counters", "dupacks", "in_recovery", "recover", "rtx_one", "sb", "sack_rec",
                 "high_rxt", "rack", "undo")  # fmt: skip

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        #: Duplicate ACKs in a row (RFC 5681 (2)).
        self.dupacks = 0
        #: A fast recovery is running (RFC 6582 / RFC 6675).
        self.in_recovery = False
        #: The recovery point: SND.MAX when the recovery (or the last timeout) began.
        self.recover = 0
        #: Retransmit the first unacknowledged segment at the next output (fast
        #: retransmit, NewReno partial ACK, the first retransmission of a SACK recovery).
        self.rtx_one = False
        # RFC 6675: the SACK scoreboard, whether the current recovery is SACK-driven, and
        # HighRxt (end of the highest byte retransmitted in this recovery).
        self.sb = SackScoreboard()
        self.sack_rec = False
        self.high_rxt = 0
        #: RFC 8985 RACK-TLP state; None when off (not configured, or no SACK).
        self.rack: Rack | None = None
        #: After a timeout on a timestamp connection, what undoing it restores (None: none
        #: pending).
        self.undo: RtoUndo | None = None

    def enable_rack(self, on: bool) -> None:
        """Use RACK-TLP for this connection (it needs SACK: RFC 8985 (2.2))."""
        self.rack = Rack() if on else None

    # ------------------------------------------------------------------- ACKs

    def on_ack(
        self, ack: int, acked: int, cc: CongestionControl | None, now: float, srtt: float | None
    ) -> None:
        """A cumulative ACK acknowledged ``acked`` new bytes, up to ``ack``."""
        if cc is not None:
            if self.in_recovery:
                if ack >= self.recover:
                    # RFC 6582 (3.2 step 3) / RFC 6675 (5): a cumulative ACK at or above the
                    # recovery point ends recovery; cwnd = ssthresh.
                    self.in_recovery = False
                    self.sack_rec = False
                    cc.on_recovery_exit(now)
                    if self.rack is not None:
                        self.rack.on_recovery_exit()
                elif self.sack_rec:
                    # RFC 6675 (5) step (C): a partial ACK changes nothing but the
                    # scoreboard; output() sends what pipe allows (holes first).
                    self.counters["partial_acks"] += 1
                    if self.high_rxt < ack:
                        self.high_rxt = ack
                else:
                    # RFC 6582 (3.2 step 5): partial ACK, retransmit the next hole, deflate.
                    self.counters["partial_acks"] += 1
                    cc.on_recovery_partial_ack(acked, now)
                    self.rtx_one = True
            else:
                cc.on_ack(acked, now, srtt)
        self.dupacks = 0

    def on_dup_ack(
        self,
        snd_una: int,
        snd_max: int,
        sack_ok: bool,
        mss: int,
        cc: CongestionControl | None,
        now: float,
    ) -> None:
        """A duplicate ACK (RFC 5681 (2), or RFC 6675 (2): one reporting new SACKed data)."""
        self.counters["dup_acks"] += 1
        self.dupacks += 1
        if cc is None:
            return
        if self.rack is not None and sack_ok:
            # RFC 8985 (6): with RACK, DupThresh does not start a recovery (RACK's reo_wnd
            # of 0 once DupThresh segments are SACKed plays its part).
            return
        if self.in_recovery:
            if not self.sack_rec:
                # RFC 5681 (3.2 step 4): each further duplicate ACK inflates cwnd by one
                # SMSS. (RFC 6675 recovery needs no inflation: pipe counts what left.)
                cc.on_recovery_dup_ack(now)
        elif snd_una >= self.recover and (
            self.dupacks >= DUP_THRESH or (sack_ok and self.sb.is_lost(snd_una, snd_una, mss))
        ):
            # RFC 6582 (3.2 step 2) / RFC 6675 (5): enter fast recovery on DupThresh
            # duplicate ACKs or when the scoreboard says SND.UNA is lost, only past the
            # previous recovery point.
            self.in_recovery = True
            self.recover = snd_max
            cc.on_loss_fast(snd_max - snd_una, now)
            if sack_ok:
                # RFC 6675 (5) step (4.2): cwnd = ssthresh; pipe governs what is sent.
                self.sack_rec = True
                self.high_rxt = snd_una
                self.counters["sack_recoveries"] += 1
            else:
                # RFC 5681 (3.2 step 3): cwnd = ssthresh + 3*SMSS for the segments that left.
                for _ in range(3):
                    cc.on_recovery_dup_ack(now)
            self.rtx_one = True
            self.counters["fast_retransmits"] += 1
            self.counters["recoveries"] += 1

    def rack_loss(self, snd_una: int, snd_max: int, cc: CongestionControl | None, now: float) -> None:
        """RACK marked segments lost: start a recovery (RFC 8985 (6.2), then RFC 6675 (5)
        pacing) unless one runs or a timeout's go-back-N is still below its recovery point."""
        if cc is None or self.in_recovery or snd_una < self.recover:
            return
        self.in_recovery = True
        self.sack_rec = True
        self.recover = snd_max
        self.high_rxt = snd_una
        cc.on_loss_fast(snd_max - snd_una, now)
        self.rtx_one = True  # RFC 6675 (5) step (4.3): the first retransmission goes at once
        self.counters["rack_recoveries"] += 1
        self.counters["sack_recoveries"] += 1  # a SACK-based recovery, started by RACK
        self.counters["recoveries"] += 1

    def tlp_loss(self, snd_una: int, snd_max: int, cc: CongestionControl | None, now: float) -> None:
        """RFC 8985 (7.4.2): a TLP retransmission repaired a loss: one congestion response
        (cwnd = ssthresh, as at the end of a fast recovery), no retransmission."""
        self.counters["tlp_recoveries"] += 1
        if cc is not None and not self.in_recovery:
            cc.on_loss_fast(max(snd_max - snd_una, cc.cwnd), now)
            cc.on_recovery_exit(now)

    # --------------------------------------------------------------- timeouts

    def on_timeout(self, snd_una: int, snd_max: int, retries: int) -> None:
        """The retransmission timer expired (the ``retries``-th time in a row)."""
        # RFC 6582 (4) / RFC 6675 (5.1): after a timeout, recover = highest sequence sent
        # and the loss recovery in progress ends.
        self.in_recovery = False
        self.sack_rec = False
        self.high_rxt = snd_una
        self.recover = snd_max
        self.dupacks = 0
        self.rtx_one = False
        if self.rack is not None:
            self.rack.on_rto(snd_una)
        # The scoreboard is kept across a timeout (RFC 6675 (5.1): keep using the SACK
        # information; Linux does the same) so go-back-N skips SACKed data. RFC 2018 (8):
        # the receiver may renege, so a second timeout without progress forgets it.
        if retries > 1 and self.sb:
            self.sb.clear()
            self.counters["sack_reneging"] += 1

    # ------------------------------------------- spurious timeouts (Eifel)

    def save_for_undo(self, ts_now: int, cc: CongestionControl | None, flight: int) -> None:
        """The first timeout of an episode on a timestamp connection: remember what an undo
        restores, before the timeout changes it. Later timeouts of the same episode keep
        the first one's record (RFC 3522 (2): RetransmitTS is the first retransmission's)."""
        if self.undo is not None:
            return
        pipe_prev = flight
        if cc is not None:
            pipe_prev = max(flight, cc.ssthresh)
            cc = cc.snapshot()
        self.undo = RtoUndo(ts_now, cc, pipe_prev)

    def spurious_timeout(self, tsecr: int) -> RtoUndo | None:
        """The first ACK of new data after a timeout, echoing ``tsecr``: the undo record if
        the timeout was spurious, else None. Either way the question is settled (RFC 3522
        (3): only the first acceptable ACK after the retransmission decides)."""
        undo = self.undo
        self.undo = None
        if undo is None or not tsecr:
            return None
        # RFC 3522 (2): the ACK echoes a timestamp older than the retransmission's: it
        # answers an original transmission, so the retransmission was not needed.
        d = (undo.rtx_ts - tsecr) & _TS_MASK
        if d == 0 or d >= _TS_HALF:
            return None
        self.counters["spurious_rto"] += 1
        return undo

    def undo_timeout(
        self,
        undo: RtoUndo,
        cc: CongestionControl | None,
        snd_una: int,
        snd_max: int,
        acked: int,
        mss: int,
    ) -> None:
        """RFC 4015 (4): reverse a spurious timeout's congestion response and its
        go-back-N bookkeeping (the connection sets SND.NXT back to SND.MAX)."""
        # The timeout's recovery point only guarded against the go-back-N's duplicates
        # (RFC 6582 (4)); with no go-back-N, a later loss may start a recovery again.
        self.recover = snd_una
        self.high_rxt = snd_una
        if self.rack is not None:
            self.rack.undo_rto()
        prior = undo.cc
        if cc is None or prior is None:
            return
        if cc.loss_events != prior.loss_events:
            # Another congestion signal came since the timeout (RFC 4015 (4): an ECN-Echo;
            # or a loss found by SACK or a probe): keep the reduced window.
            return
        # RFC 4015 (4): cwnd = FlightSize + min(bytes_acked, IW), ssthresh = pipe_prev;
        # RFC 9438 (4.9): CUBIC's own state (W_max, K, epoch) as before the timeout.
        iw = initial_window(mss, cc.initial_cwnd_segments)
        cc.restore(prior, (snd_max - snd_una) + min(acked, iw), undo.pipe_prev)

    # ------------------------------------------------------- RFC 6675 output

    def sack_picks(
        self,
        una: int,
        snd_max: int,
        cwnd: int,
        mss: int,
        data_end: int,
        fin_abs: int | None,
        can_send_new: bool,
    ) -> tuple[list[tuple[int, int, bool]], int]:
        """RFC 6675 (5): what to retransmit while cwnd - pipe >= 1 SMSS.

        Holes known lost come first (NextSeg rule 1); a hole not yet known lost is resent
        (rule 3) only when no new data can go out. The first retransmission of a recovery
        goes regardless of pipe (step 4.3). Returns ``(start, length, with_fin)`` for each
        retransmission and the cwnd room left for new data (rule 2).
        """
        if self.rack is not None:
            return self._rack_picks(una, snd_max, cwnd, mss, data_end, fin_abs)
        sb = self.sb
        high_rxt = self.high_rxt if self.high_rxt > una else una
        pipe = sb.pipe(una, snd_max, high_rxt, mss)
        force = self.rtx_one
        self.rtx_one = False
        picks: list[tuple[int, int, bool]] = []
        for _ in range(MAX_SACK_PICKS):  # bounded per output() call
            if not force and cwnd - pipe < mss:
                break
            pick = sb.next_seg(high_rxt, una, mss)
            if pick is None:
                if not (force and una < snd_max):
                    break
                s, e = una, min(una + mss, snd_max)
            else:
                s, e, lost = pick
                if not lost and not force and can_send_new:
                    break
            n = (e if e < data_end else data_end) - s
            if n < 0:
                n = 0
            fin = fin_abs is not None and s + n == fin_abs and snd_max > fin_abs
            if not fin and n == 0:
                break
            picks.append((s, n, fin))
            high_rxt = s + n + (1 if fin else 0)
            pipe += n
            force = False
        self.high_rxt = high_rxt
        room = cwnd - pipe
        return picks, (room if room > 0 else 0)

    def _rack_picks(
        self, una: int, snd_max: int, cwnd: int, mss: int, data_end: int, fin_abs: int | None
    ) -> tuple[list[tuple[int, int, bool]], int]:
        """RFC 8985 (6) with RFC 6675 (5) pacing: resend what RACK deems lost, lowest first,
        while cwnd - pipe >= 1 SMSS (the first one regardless); the rest is room for new data.
        A retransmission is in flight again, so RACK can find it lost again by time."""
        rack = self.rack
        assert rack is not None
        pipe = rack.pipe()
        force = self.rtx_one
        self.rtx_one = False
        picks: list[tuple[int, int, bool]] = []
        for a, b in rack.lost_ranges(una):
            s = a
            while s < b and len(picks) < MAX_SACK_PICKS:
                if not force and cwnd - pipe < mss:
                    break
                e = s + mss if s + mss < b else b
                n = (e if e < data_end else data_end) - s
                if n < 0:
                    n = 0
                fin = fin_abs is not None and s + n == fin_abs and snd_max > fin_abs
                if not fin and n == 0:
                    break
                picks.append((s, n, fin))
                pipe += n
                force = False
                s = e
            else:
                continue
            break
        if picks:
            last_s, last_n, last_fin = picks[-1]
            self.high_rxt = max(self.high_rxt, last_s + last_n + (1 if last_fin else 0))
        room = cwnd - pipe
        return picks, (room if room > 0 else 0)
