"""Round-trip time estimation and the retransmission timeout (RFC 6298).

Sans-I/O: the connection measures an RTT sample (``now - time_sent`` or from a timestamp
echo) and feeds it in; this module only keeps the smoothed state and the current RTO.

Karn's rule (RFC 6298 section 3, Karn & Partridge 1987) is the caller's job: never take an
RTT sample from a segment that was retransmitted, because the ACK cannot tell which copy it
acknowledges. (With RFC 7323 timestamps the echoed TSecr identifies the copy, so samples are
valid even for retransmissions.) Until such a valid sample arrives the backed-off RTO is kept
(section 5.5); a valid sample ends the backoff, as in Karn's algorithm.
"""

from __future__ import annotations

import math

__all__ = ["RttEstimator"]

# RFC 6298 (2.3): the recommended gains.
ALPHA = 1.0 / 8.0
BETA = 1.0 / 4.0
# RFC 6298 (2.2)/(2.3): RTO = SRTT + max(G, K * RTTVAR).
K = 4.0
# RFC 6298 (5.7): the RTO once data flows after the SYN timed out with RTO < 3 s.
SYN_FALLBACK_RTO = 3.0


class RttEstimator:
    """SRTT/RTTVAR/RTO per RFC 6298 with exponential backoff.

    ``rto_min`` replaces RFC 6298's 1 s floor (2.4) with a configurable one (Linux uses 0.2 s);
    ``rto_max`` is the upper bound allowed by (2.5). All times are float seconds.
    """

    __slots__ = (
        "rto_initial",
        "rto_min",
        "rto_max",
        "clock_granularity",
        "_srtt",
        "_rttvar",
        "_base_rto",
        "_rto",
        "_backoff_count",
        "samples",
        "ignored_samples",
    )

    def __init__(
        self,
        rto_initial: float = 1.0,
        rto_min: float = 0.2,
        rto_max: float = 120.0,
        clock_granularity: float = 0.001,
    ) -> None:
        if not 0.0 < rto_min <= rto_max:
            raise ValueError("need 0 < rto_min <= rto_max")
        if rto_initial <= 0.0 or clock_granularity < 0.0:
            raise ValueError("rto_initial must be > 0 and clock_granularity >= 0")
        self.rto_initial = rto_initial
        self.rto_min = rto_min
        self.rto_max = rto_max
        self.clock_granularity = clock_granularity
        self._srtt: float | None = None
        self._rttvar: float | None = None
        # RFC 6298 (2.1): until a measurement is made, RTO is the initial value.
        self._base_rto = self._clamp(rto_initial)
        self._rto = self._base_rto
        self._backoff_count = 0
        self.samples = 0
        self.ignored_samples = 0

    # -- read-only state -------------------------------------------------------------------

    @property
    def rto(self) -> float:
        """The current retransmission timeout in seconds (backoff included)."""
        return self._rto

    @property
    def srtt(self) -> float | None:
        """Smoothed RTT, or None before the first sample."""
        return self._srtt

    @property
    def rttvar(self) -> float | None:
        """RTT variation, or None before the first sample."""
        return self._rttvar

    @property
    def backoff_count(self) -> int:
        """How many times ``backoff()`` doubled the RTO since the last reset."""
        return self._backoff_count

    # -- updates ---------------------------------------------------------------------------

    def sample(self, rtt: float) -> None:
        """Feed one valid RTT measurement (seconds); the caller has applied Karn's rule.

        A negative or non-finite value (a broken timestamp echo, say) is ignored and counted
        in ``ignored_samples`` rather than corrupting the estimator.
        """
        if not 0.0 <= rtt < math.inf:  # negative, infinite or NaN
            self.ignored_samples += 1
            return
        self.samples += 1
        if self._srtt is None or self._rttvar is None:
            # RFC 6298 (2.2): first measurement R: SRTT <- R, RTTVAR <- R/2.
            self._srtt = rtt
            self._rttvar = rtt / 2.0
        else:
            # RFC 6298 (2.3): RTTVAR uses the SRTT from before this update.
            self._rttvar = (1.0 - BETA) * self._rttvar + BETA * abs(self._srtt - rtt)
            self._srtt = (1.0 - ALPHA) * self._srtt + ALPHA * rtt
        # RFC 6298 (2.3): RTO <- SRTT + max(G, K*RTTVAR), clamped (2.4, 2.5) like _clamp
        # (written out: this runs on every timed ACK).
        var = K * self._rttvar
        rto = self._srtt + (var if var > self.clock_granularity else self.clock_granularity)
        if rto < self.rto_min:
            rto = self.rto_min
        if rto > self.rto_max:
            rto = self.rto_max
        self._base_rto = rto
        # Karn's algorithm: a valid sample from an unretransmitted segment ends the backoff.
        self._backoff_count = 0
        self._rto = rto

    def backoff(self) -> None:
        """The retransmission timer expired: double the RTO (RFC 6298 (5.5)), up to rto_max."""
        self._backoff_count += 1
        # RFC 6298 (2.5): a maximum may be placed on RTO.
        self._rto = min(self._rto * 2.0, self.rto_max)

    def reset_backoff(self) -> None:
        """Forget the backoff: RTO is again computed from SRTT/RTTVAR (or the initial RTO)."""
        self._backoff_count = 0
        self._rto = self._base_rto

    def syn_fallback(self, rto: float = SYN_FALLBACK_RTO) -> None:
        """RFC 6298 (5.7): the SYN (or SYN-ACK) was retransmitted and no RTT was measured:
        data starts with RTO = 3 s (Linux's TCP_TIMEOUT_FALLBACK) if it was lower."""
        if self._srtt is not None:
            return
        r = min(max(rto, self.rto_min), self.rto_max)
        if self._base_rto < r:
            self._base_rto = r
        self._backoff_count = 0
        self._rto = self._base_rto

    def _clamp(self, rto: float) -> float:
        # RFC 6298 (2.4): a computed RTO below the minimum is rounded up to it;
        # RFC 6298 (2.5): a maximum may be placed on RTO.
        return min(max(rto, self.rto_min), self.rto_max)

    def __repr__(self) -> str:
        return (
            f"RttEstimator(srtt={self._srtt!r}, rttvar={self._rttvar!r}, rto={self._rto!r}, "
            f"backoff={self._backoff_count})"
        )
