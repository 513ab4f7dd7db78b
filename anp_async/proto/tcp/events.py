"""Events the TCP engine reports to the glue (``TcpConnection.take_events()``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Connected", "DataReceived", "EofReceived", "SendSpace", "Closed", "TcpEvent"]


@dataclass(slots=True)
class Connected:
    """The connection reached ESTABLISHED (active or passive open)."""


@dataclass(slots=True)
class DataReceived:
    """``n`` bytes were added to the receive buffer; the glue calls ``recv()``."""

    n: int


@dataclass(slots=True)
class EofReceived:
    """The peer's FIN arrived and every byte before it is in the receive buffer."""


@dataclass(slots=True)
class SendSpace:
    """ACKs freed send-buffer space (resume_writing / drain)."""


@dataclass(slots=True)
class Closed:
    """The connection is gone; emitted exactly once.

    ``reason`` is one of "normal", "refused", "reset", "timeout", "aborted".
    """

    reason: str


TcpEvent = Connected | DataReceived | EofReceived | SendSpace | Closed
