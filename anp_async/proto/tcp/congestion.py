"""Congestion control: NewReno (RFC 5681/6582) and CUBIC (RFC 9438).

Sans-I/O and window-only: the connection decides *when* something happened (new data
acknowledged, three duplicate ACKs, a partial or full ACK in recovery, a retransmission
timeout) and calls the matching method with the current time; the algorithm only moves
``cwnd`` and ``ssthresh`` (both in bytes). Fast-recovery bookkeeping (``recover``, which
segment to retransmit) belongs to the connection (RFC 6582 section 3.2).

Call sequence expected from the connection::

    on_ack(acked, now, rtt)           # new data ACKed, not in fast recovery
    on_loss_fast(flight, now)         # 3 duplicate ACKs: enter fast recovery
    on_recovery_dup_ack(now)          # optional: inflate by one MSS per further dup ACK
    on_recovery_partial_ack(n, now)   # optional: RFC 6582 partial-ACK deflation
    on_recovery_exit(now)             # full ACK: deflate to ssthresh
    on_timeout(flight, now)           # retransmission timer expired

A connection that keeps the window inflation in its own variable can ignore the two
optional calls and add its inflation to ``cwnd`` itself.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from typing import ClassVar

__all__ = [
    "CongestionControl",
    "Cubic",
    "INITIAL_SSTHRESH",
    "MAX_CWND",
    "NewReno",
    "initial_window",
    "make_congestion",
]

# RFC 5681 (3.1): the initial ssthresh SHOULD be set arbitrarily high.
INITIAL_SSTHRESH = 1 << 31
# The largest window TCP can advertise (RFC 7323: 65535 << 14); cwnd never needs more.
MAX_CWND = 1 << 30


def initial_window(mss: int, segments: int = 10) -> int:
    """The initial congestion window in bytes.

    RFC 6928 (2): IW = min(10*MSS, max(2*MSS, 14600)), generalised to ``segments``
    (14600 = segments * 1460), so jumbo MSS values do not get a huge initial burst.
    """
    n = max(1, segments)
    return min(n * mss, max(2 * mss, n * 1460))


class CongestionControl(ABC):
    """Common window logic: slow start, loss reactions, recovery deflation.

    Subclasses provide the congestion-avoidance growth (``_congestion_avoidance``) and the
    multiplicative decrease (``_reduce``).
    """

    name: ClassVar[str] = "abstract"
    #: RFC 3465 (2.2): the ABC limit L, in segments, on cwnd growth per ACK in slow start.
    abc_limit_segments: ClassVar[int] = 2

    __slots__ = (
        "mss",
        "initial_cwnd_segments",
        "cwnd",
        "ssthresh",
        "_bytes_acked",
        "_acked_any",
        "_rto_pending",
        "loss_events",
        "timeouts",
    )

    def __init__(self, mss: int, initial_cwnd_segments: int = 10) -> None:
        if mss <= 0:
            raise ValueError(f"mss must be positive, got {mss}")
        self.mss = mss
        self.initial_cwnd_segments = max(1, initial_cwnd_segments)
        self.cwnd: int = initial_window(mss, self.initial_cwnd_segments)
        self.ssthresh: int = INITIAL_SSTHRESH
        self._bytes_acked = 0  # RFC 3465 (2.1) byte counter for congestion avoidance
        self._acked_any = False
        self._rto_pending = False  # a timeout happened and no new data was ACKed since
        self.loss_events = 0
        self.timeouts = 0

    # -- state -----------------------------------------------------------------------------

    @property
    def in_slow_start(self) -> bool:
        """RFC 5681 (3.1): slow start is used while cwnd < ssthresh."""
        return self.cwnd < self.ssthresh

    def info(self) -> dict[str, object]:
        """Current state for ``conn.info()`` / ``ss -ti`` style output."""
        return {
            "cc": self.name,
            "cwnd": self.cwnd,
            "ssthresh": self.ssthresh,
            "mss": self.mss,
            "slow_start": self.in_slow_start,
        }

    def on_ack(
        self, acked_bytes: int, now: float, rtt: float | None = None, in_flight: int | None = None
    ) -> None:
        """New data was cumulatively acknowledged outside fast recovery.

        ``rtt`` is the connection's smoothed RTT (or the latest sample; None if unknown);
        ``in_flight`` is accepted for interface compatibility and not used.
        """
        if acked_bytes <= 0:
            return
        self._acked_any = True
        self._rto_pending = False
        if self.cwnd < self.ssthresh:
            acked_bytes = self._slow_start(acked_bytes)
        if acked_bytes > 0:
            self._congestion_avoidance(acked_bytes, now, rtt)
        if self.cwnd > MAX_CWND:
            self.cwnd = MAX_CWND

    def on_loss_fast(self, in_flight: int, now: float) -> None:
        """Three duplicate ACKs: set ssthresh and cwnd = ssthresh (inflation is added later)."""
        self.loss_events += 1
        self._rto_pending = False
        self.ssthresh = self._reduce(in_flight, now, timeout=False)
        self.cwnd = self.ssthresh
        self._bytes_acked = 0

    def on_recovery_dup_ack(self, now: float) -> None:
        """RFC 5681 (3.2 step 4): each further duplicate ACK inflates cwnd by one SMSS."""
        self.cwnd = min(self.cwnd + self.mss, MAX_CWND)

    def on_recovery_partial_ack(self, acked_bytes: int, now: float) -> None:
        """RFC 6582 (3.2 step 5): deflate by the newly acked amount, add back one SMSS if
        at least one SMSS was acked, so roughly ``ssthresh`` stays in flight."""
        if acked_bytes <= 0:
            return
        self._rto_pending = False
        grow_back = self.mss if acked_bytes >= self.mss else 0
        self.cwnd = max(self.cwnd - acked_bytes + grow_back, self.mss)

    def on_recovery_exit(self, now: float, in_flight: int | None = None) -> None:
        """A full ACK ends fast recovery: deflate the window.

        RFC 6582 (3.2 step 3): cwnd = ssthresh, or, when ``in_flight`` is given,
        min(ssthresh, max(FlightSize, SMSS) + SMSS) to avoid a burst.
        """
        self._rto_pending = False
        if in_flight is None:
            self.cwnd = min(self.ssthresh, MAX_CWND)
        else:
            self.cwnd = min(self.ssthresh, max(in_flight, self.mss) + self.mss, MAX_CWND)
        self._bytes_acked = 0

    def on_timeout(self, in_flight: int, now: float) -> None:
        """The retransmission timer expired.

        RFC 5681 (4): ssthresh = max(FlightSize/2, 2*SMSS) (CUBIC: RFC 9438 (4.8) uses its
        beta instead), cwnd = LW = 1 SMSS. RFC 5681 (3.1): when the segment timing out was
        already retransmitted by the timer, ssthresh is held constant; that is the case when
        no new data was acknowledged since the previous timeout.
        """
        self.timeouts += 1
        if not self._rto_pending:
            self.ssthresh = self._reduce(in_flight, now, timeout=True)
        self._rto_pending = True
        self.cwnd = self.mss
        self._bytes_acked = 0

    def snapshot(self) -> CongestionControl:
        """A copy of the whole state, for undoing a response found spurious later."""
        return copy.copy(self)

    def restore(self, prior: CongestionControl, cwnd: int, ssthresh: int) -> None:
        """Undo a spurious congestion response: the algorithm's state as in ``prior`` (a
        :meth:`snapshot`), then ``cwnd`` and ``ssthresh`` (RFC 4015 (4); for CUBIC RFC
        9438 (4.9)). The event counts stay: the events happened."""
        for klass in type(self).__mro__:
            for name in getattr(klass, "__slots__", ()):
                if name not in ("loss_events", "timeouts") and hasattr(prior, name):
                    setattr(self, name, getattr(prior, name))
        self.cwnd = max(self.mss, min(cwnd, MAX_CWND))
        self.ssthresh = max(2 * self.mss, ssthresh)
        self._rto_pending = False
        self._bytes_acked = 0

    # -- shared pieces ---------------------------------------------------------------------

    def _slow_start(self, acked_bytes: int) -> int:
        """Grow cwnd in slow start; return the acked bytes left for congestion avoidance."""
        # RFC 5681 (3.1) cwnd += min(N, SMSS), relaxed by RFC 3465 (2.2) to min(N, L*SMSS).
        increase = min(acked_bytes, self.abc_limit_segments * self.mss)
        room = self.ssthresh - self.cwnd
        if increase < room:
            self.cwnd += increase
            return 0
        # Reaching ssthresh: what exceeds it is counted in congestion avoidance.
        self.cwnd = self.ssthresh
        return acked_bytes - room

    def _reno_increase(self, acked_bytes: int) -> None:
        # RFC 5681 (3.1) / RFC 3465 (2.1): byte counting, one SMSS per cwnd of acked bytes,
        # which is ~1 SMSS per RTT whatever the ACK pattern (delayed ACKs included).
        self._bytes_acked += acked_bytes
        while self._bytes_acked >= self.cwnd:
            self._bytes_acked -= self.cwnd
            self.cwnd += self.mss

    @abstractmethod
    def _congestion_avoidance(self, acked_bytes: int, now: float, rtt: float | None) -> None:
        """Grow cwnd for ``acked_bytes`` newly acknowledged in congestion avoidance."""

    @abstractmethod
    def _reduce(self, in_flight: int, now: float, timeout: bool) -> int:
        """Record a congestion event and return the new ssthresh in bytes."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cwnd={self.cwnd}, ssthresh={self.ssthresh}, mss={self.mss})"


class NewReno(CongestionControl):
    """Reno/NewReno window rules (RFC 5681, RFC 6582)."""

    name: ClassVar[str] = "newreno"
    __slots__ = ()

    def _congestion_avoidance(self, acked_bytes: int, now: float, rtt: float | None) -> None:
        self._reno_increase(acked_bytes)

    def _reduce(self, in_flight: int, now: float, timeout: bool) -> int:
        # RFC 5681 (4): ssthresh = max(FlightSize / 2, 2*SMSS).
        return max(in_flight // 2, 2 * self.mss)


class Cubic(CongestionControl):
    """CUBIC (RFC 9438). Windows inside the algorithm are floats in segments, as in the RFC;
    ``cwnd``/``ssthresh`` stay integer bytes (a fractional remainder is carried over)."""

    name: ClassVar[str] = "cubic"
    #: RFC 9438 (5): C SHOULD be 0.4 (segments / s^3).
    C: ClassVar[float] = 0.4
    #: RFC 9438 (4.6): beta_cubic SHOULD be 0.7.
    BETA: ClassVar[float] = 0.7
    #: RFC 9438 (4.3): alpha_cubic = 3 * (1 - beta) / (1 + beta) for Reno-friendliness.
    ALPHA: ClassVar[float] = 3.0 * (1.0 - 0.7) / (1.0 + 0.7)

    __slots__ = (
        "fast_convergence",
        "w_max",
        "cwnd_prior",
        "k",
        "epoch_start",
        "cwnd_epoch",
        "w_est",
        "_frac",
        "_after_timeout",
        "_rtt",
    )

    def __init__(self, mss: int, initial_cwnd_segments: int = 10) -> None:
        super().__init__(mss, initial_cwnd_segments)
        # RFC 9438 (4.7): fast convergence SHOULD be on.
        self.fast_convergence = True
        self.w_max = 0.0  # segments; cwnd before the last reduction (or the 4.7 value)
        self.cwnd_prior = 0.0  # segments; cwnd when ssthresh was last set
        self.k = 0.0  # seconds
        self.epoch_start: float | None = None  # start of the current CA stage
        self.cwnd_epoch = 0.0  # segments
        self.w_est = 0.0  # segments, the Reno-friendly estimate
        self._frac = 0.0  # bytes of cwnd growth below one byte, carried between ACKs
        self._after_timeout = False
        self._rtt = 0.0

    def info(self) -> dict[str, object]:
        """Window state plus the CUBIC variables."""
        d = super().info()
        d.update(w_max=self.w_max * self.mss, k=self.k, w_est=self.w_est * self.mss)
        return d

    def w_cubic(self, t: float) -> float:
        """RFC 9438 (4.2) Figure 1: W_cubic(t) = C*(t-K)^3 + W_max, in segments."""
        return self.C * (t - self.k) ** 3 + self.w_max

    def _start_epoch(self, now: float) -> None:
        self.epoch_start = now
        self.cwnd_epoch = self.cwnd / self.mss
        if self._after_timeout or self.w_max <= self.cwnd_epoch:
            # RFC 9438 (4.8): the first CA stage after a timeout uses K = 0 and W_max = the
            # cwnd at its start; the same origin is used when there is no W_max above cwnd
            # yet (the first CA stage, or a window that already passed W_max).
            self.w_max = self.cwnd_epoch
            self.k = 0.0
        else:
            # RFC 9438 (4.2) Figure 2: K = cubic_root((W_max - cwnd_epoch) / C).
            self.k = ((self.w_max - self.cwnd_epoch) / self.C) ** (1.0 / 3.0)
        self._after_timeout = False
        # RFC 9438 (4.3): W_est starts at cwnd_epoch (4.8: also after a timeout).
        self.w_est = self.cwnd_epoch
        self._frac = 0.0

    def _congestion_avoidance(self, acked_bytes: int, now: float, rtt: float | None) -> None:
        if rtt is not None and math.isfinite(rtt) and rtt >= 0.0:
            self._rtt = rtt
        epoch_start = self.epoch_start
        if epoch_start is None:
            self._start_epoch(now)
            epoch_start = now
        mss = self.mss
        cwnd = (self.cwnd + self._frac) / mss
        segments_acked = acked_bytes / mss
        t = max(0.0, now - epoch_start)

        # RFC 9438 (4.3) Figure 4: W_est += alpha * segments_acked / cwnd; alpha becomes 1
        # once W_est has reached the cwnd at the last reduction.
        alpha = 1.0 if self.w_est >= self.cwnd_prior else self.ALPHA
        self.w_est += alpha * segments_acked / cwnd

        if self.w_cubic(t) < self.w_est:
            # RFC 9438 (4.3): Reno-friendly region, cwnd follows W_est (never shrinks on ACK).
            new_cwnd = max(cwnd, self.w_est)
        else:
            # RFC 9438 (4.2): target = W_cubic(t + RTT), clamped to [cwnd, 1.5 * cwnd];
            # (4.4)/(4.5): cwnd += (target - cwnd) / cwnd per acked segment.
            target = min(max(self.w_cubic(t + self._rtt), cwnd), 1.5 * cwnd)
            new_cwnd = min(cwnd + (target - cwnd) / cwnd * segments_acked, target)

        new_bytes = min(new_cwnd * mss, float(MAX_CWND))
        self.cwnd = max(int(new_bytes), self.cwnd)
        self._frac = max(0.0, new_bytes - self.cwnd)

    def _reduce(self, in_flight: int, now: float, timeout: bool) -> int:
        cwnd = self.cwnd / self.mss
        if timeout:
            # RFC 9438 (4.8): W_max/K are re-based at the start of the next CA stage.
            self._after_timeout = True
        elif self.fast_convergence and cwnd < self.w_max:
            # RFC 9438 (4.7) Figure 6: a flow that lost before reaching its last W_max
            # releases bandwidth to newer flows.
            self.w_max = cwnd * (1.0 + self.BETA) / 2.0
        else:
            self.w_max = cwnd
        self.cwnd_prior = cwnd
        self.epoch_start = None
        self._frac = 0.0
        # RFC 9438 (4.6) Figure 5: ssthresh = flight_size * beta_cubic, at least 2 SMSS.
        return max(round(in_flight * self.BETA), 2 * self.mss)


_ALGORITHMS: dict[str, type[CongestionControl]] = {"newreno": NewReno, "cubic": Cubic}


def make_congestion(name: str, mss: int, initial_cwnd_segments: int = 10) -> CongestionControl:
    """Build the congestion controller called ``name`` ("newreno" or "cubic")."""
    try:
        cls = _ALGORITHMS[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown congestion control {name!r}; choose from {sorted(_ALGORITHMS)}"
        ) from None
    return cls(mss, initial_cwnd_segments)
