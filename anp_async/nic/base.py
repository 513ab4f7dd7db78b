"""The NIC interface every driver implements: a pollable fd, batched reads, gathered writes.

A NIC knows nothing about protocols. It moves whole Ethernet frames (``bytes``) in and out
and counts what it did. The receive modes (``anp_async.modes``) decide *when* to call
:meth:`Nic.recv_batch`; the stack calls :meth:`Nic.send` with a list of buffers that the
driver writes as one frame with scatter-gather I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass

Buffer = bytes | bytearray | memoryview


@dataclass(slots=True)
class NicStats:
    """Per-NIC counters, like ``ip -s link`` / ``ethtool -S``."""

    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    rx_dropped: int = 0  # frames the driver discarded on receive (e.g. over-length)
    tx_dropped: int = 0  # frames not sent: tx queue full (EAGAIN/ENOBUFS), link down
    rx_errors: int = 0  # read() failures other than "nothing pending"
    tx_errors: int = 0  # write() failures other than a full queue

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Nic(ABC):
    """A virtual network interface card.

    Contract:
    - :meth:`fileno` is a real, non-blocking file descriptor that is readable exactly
      when at least one frame is pending (so ``loop.add_reader`` and busy polling both
      work on it).
    - :meth:`recv_batch` never blocks: it returns up to ``max_frames`` pending frames,
      or an empty list when none is pending.
    - :meth:`send` never blocks: it writes one frame made of the concatenation of
      ``parts``; if the device queue is full the frame is dropped and counted in
      ``stats.tx_dropped`` (a real NIC drops too; TCP retransmits).
    """

    #: Largest frame payload (the IP MTU) this NIC carries.
    mtu: int = 1500

    def __init__(self) -> None:
        self.stats = NicStats()

    @abstractmethod
    def fileno(self) -> int: ...

    @abstractmethod
    def recv_batch(self, max_frames: int = 64) -> list[bytes]: ...

    @abstractmethod
    def send(self, parts: Sequence[Buffer]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Nic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
