"""Events the TCP engine reports to the glue (``TcpConnection.take_events()``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CloseReason",
    "Connected",
    "DataReceived",
    "EofReceived",
    "SendSpace",
    "Closed",
    "TcpEvent",
]


class CloseReason(enum.StrEnum):
    """Why a connection ended (a ``str``: it compares equal to its value)."""

    #: Both sides closed and every byte was delivered (or TIME-WAIT ended).
    NORMAL = "normal"
    #: Our SYN was answered with a RST (or an ICMP hard error): ConnectionRefusedError.
    REFUSED = "refused"
    #: The peer reset an open connection: ConnectionResetError.
    RESET = "reset"
    #: Retransmissions, probes or the user timeout ran out: TimeoutError.
    TIMEOUT = "timeout"
    #: The application aborted it.
    ABORTED = "aborted"
    #: ARP found no next hop for it (set by the I/O layer): EHOSTUNREACH.
    UNREACHABLE = "unreachable"


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

    ``reason`` is a :class:`CloseReason` (a str: ``Closed("reset")`` compares equal).
    """

    reason: CloseReason | str


TcpEvent = Connected | DataReceived | EofReceived | SendSpace | Closed
