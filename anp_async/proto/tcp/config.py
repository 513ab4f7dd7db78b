"""Tunables of one TCP connection, with Linux-like defaults (see TCP_API.md)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TcpConfig"]

# Hard upper bounds so a user setting can never make a connection unbounded.
MAX_BUFFER = 64 * 1024 * 1024
MIN_BUFFER = 1024


@dataclass(slots=True)
class TcpConfig:
    """Per-connection configuration. Times are float seconds, sizes bytes."""

    mss: int = 1460  # our advertised MSS (glue sets MTU - 40)
    send_buffer: int = 256 * 1024
    recv_buffer: int = 256 * 1024
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

    def __post_init__(self) -> None:
        self.mss = max(88, min(int(self.mss), 65495))
        self.send_buffer = max(MIN_BUFFER, min(int(self.send_buffer), MAX_BUFFER))
        self.recv_buffer = max(MIN_BUFFER, min(int(self.recv_buffer), MAX_BUFFER))
        self.max_ooo_segments = max(1, min(int(self.max_ooo_segments), 65536))
        self.delayed_ack = max(0.0, min(float(self.delayed_ack), 0.5))
