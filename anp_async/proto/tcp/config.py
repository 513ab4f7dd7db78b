"""Tunables of one TCP connection, with Linux-like defaults (the socket options that change
them per connection are mapped in ``transport/sockobj.py`` and ``TcpTransport``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["ChallengeAckLimiter", "RECOVERY_MODES", "TcpConfig"]

#: ``--recovery`` names -> (sack, rack): RACK-TLP needs SACK (RFC 8985 (2.2)); NewReno
#: (RFC 6582) is what is left without SACK.
RECOVERY_MODES: dict[str, tuple[bool, bool]] = {
    "rack": (True, True),
    "sack": (True, False),
    "newreno": (False, False),
}

# Hard upper bounds so a user setting can never make a connection unbounded.
MAX_BUFFER = 64 * 1024 * 1024
MIN_BUFFER = 1024


@dataclass(slots=True)
class TcpConfig:
    """Per-connection configuration. Times are float seconds, sizes bytes."""

    mss: int = 1460  # our advertised MSS (glue sets MTU - 40)
    send_buffer: int = 256 * 1024
    recv_buffer: int = 256 * 1024
    # Receive-window autotuning (Linux's tcp_moderate_rcvbuf up to tcp_rmem[2]): the
    # window starts at recv_buffer and doubles, up to this, each time the peer has filled
    # a whole window and the application has taken it all. 0: no autotuning. The stack
    # sets it for a NIC with offloads, where a 256 KiB window holds four super-segments.
    recv_buffer_max: int = 0
    window_scale: bool = True
    sack: bool = True
    timestamps: bool = True
    nodelay: bool = False
    delayed_ack: float = 0.04
    rto_initial: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 120.0
    syn_retries: int = 6
    max_retries: int = 15
    msl: float = 30.0
    congestion: str = "newreno"
    user_timeout: float | None = None
    keepalive: bool = False
    keepalive_idle: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_count: int = 9
    max_ooo_segments: int = 256
    initial_cwnd_segments: int = 10
    challenge_ack_limit: int = 100  # RFC 5961 (7): challenge ACKs per second per connection
    # RFC 5961 (7): challenge ACKs per second across all connections of a stack (Linux's
    # tcp_challenge_ack_limit); the stack builds one ChallengeAckLimiter from it and hands
    # the same object to every connection in ``challenge_limiter``.
    challenge_ack_global_limit: int = 1000
    challenge_limiter: ChallengeAckLimiter | None = None
    # RFC 4987 (3.6): answer SYNs with SYN cookies when a listener's SYN queue is full.
    syncookies: bool = True
    # TSO: largest segment output() builds, cut into MSS-sized ones by the NIC (0: off;
    # the stack sets it when the NIC offers segmentation offload).
    tso_max: int = 0
    # RFC 1337 (TIME-WAIT assassination): a connection in TIME-WAIT ignores RST, so an old
    # duplicate RST cannot end TIME-WAIT early and let old segments into a new incarnation
    # (Linux's net.ipv4.tcp_rfc1337=1). False: a RST ends TIME-WAIT (RFC 9293's text).
    rfc1337: bool = True
    # RFC 8985 RACK-TLP: time-based loss detection and tail loss probes on SACK connections
    # (Linux's net.ipv4.tcp_recovery=1, on by default). False: RFC 6675 DupThresh only.
    rack: bool = True
    # RFC 3168 ECN: ask for it on our SYNs (Linux's tcp_ecn=1; off by default as on Linux
    # clients). ``ecn_accept``: agree when a peer's SYN asks (Linux's default tcp_ecn=2).
    ecn: bool = False
    ecn_accept: bool = True

    def __post_init__(self) -> None:
        self._check()
        self.mss = max(88, min(int(self.mss), 65495))
        self.send_buffer = max(MIN_BUFFER, min(int(self.send_buffer), MAX_BUFFER))
        self.recv_buffer = max(MIN_BUFFER, min(int(self.recv_buffer), MAX_BUFFER))
        rmax = int(self.recv_buffer_max)
        self.recv_buffer_max = 0 if rmax <= 0 else max(self.recv_buffer, min(rmax, MAX_BUFFER))
        self.max_ooo_segments = max(1, min(int(self.max_ooo_segments), 65536))
        self.delayed_ack = max(0.0, min(float(self.delayed_ack), 0.5))
        # One IPv4 datagram (65535 bytes) must hold it with IP and TCP headers at their largest.
        self.tso_max = max(0, min(int(self.tso_max), 65535 - 20 - 60))

    def _check(self) -> None:
        """ValueError for values no connection can work with (sizes are clamped instead)."""
        for name in ("rto_initial", "rto_min", "rto_max", "msl", "keepalive_idle",
                     "keepalive_interval"):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise ValueError(
                    f"TcpConfig.{name} must be a positive number of seconds, got {v!r}"
                )
        if self.rto_max < self.rto_min:
            raise ValueError(
                f"TcpConfig.rto_max ({self.rto_max}) is below rto_min ({self.rto_min})"
            )
        if self.user_timeout is not None and not (
            isinstance(self.user_timeout, int | float) and self.user_timeout > 0
        ):
            raise ValueError(
                f"TcpConfig.user_timeout must be None or > 0, got {self.user_timeout!r}"
            )
        for name, lo in (("syn_retries", 0), ("max_retries", 1), ("keepalive_count", 1),
                         ("initial_cwnd_segments", 1), ("challenge_ack_limit", 1),
                         ("challenge_ack_global_limit", 1)):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"TcpConfig.{name} must be an integer >= {lo}, got {v!r}")
        if not isinstance(self.congestion, str) or self.congestion.strip().lower() not in (
            "newreno", "cubic",
        ):  # fmt: skip
            raise ValueError(
                f"TcpConfig.congestion must be 'newreno' or 'cubic', got {self.congestion!r}"
            )


class ChallengeAckLimiter:
    """RFC 5961 (7): one budget of challenge ACKs per second shared by many connections.

    A fixed global budget is an off-path side channel (CVE-2016-5696: counting the
    challenge ACKs one gets back reveals whether a guessed 4-tuple exists), so, as Linux
    does since, each second's budget is drawn at random around ``limit`` (between limit/2
    and 3*limit/2). Sans-I/O: time is passed in.
    """

    __slots__ = ("limit", "sent", "suppressed", "_second", "_budget", "_rng")

    def __init__(self, limit: int = 1000, seed: int | None = None) -> None:
        self.limit = max(1, int(limit))
        self.sent = 0
        self.suppressed = 0
        self._second = -1
        self._budget = 0
        self._rng = random.Random(seed)

    def allow(self, now: float) -> bool:
        """True if one more challenge ACK may go out at ``now`` (and count it)."""
        sec = int(now)
        if sec != self._second:
            self._second = sec
            half = self.limit // 2
            self._budget = half + self._rng.randint(0, self.limit)
        if self._budget <= 0:
            self.suppressed += 1
            return False
        self._budget -= 1
        self.sent += 1
        return True

    def counters(self) -> dict[str, int]:
        """Totals for the stack's statistics."""
        return {
            "challenge_acks_global": self.sent,
            "challenge_acks_global_suppressed": self.suppressed,
        }
