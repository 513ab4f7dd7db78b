"""Frames the stack sends to itself: a program on the stack that connects to the stack's
own address, or sends it a datagram, as Linux routes such traffic through ``lo``.

The stack (and its IPv6 layer) resolves its own addresses to its own MAC; :meth:`Stack.send_frame` hands a
frame for that MAC here instead of to the NIC. The frames wait in a bounded queue and
come back into the stack as one receive batch on the loop's next pass -- never from
inside the send, which may run in the middle of a receive batch -- byte for byte as they
would have left (a virtio-net header included: a TCP checksum left to the NIC arrives
marked "needs checksum", which the receive path trusts, as Linux's loopback does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .counters import Counters
from .nic.base import Buffer

#: Frames that may wait for the next pass; more are dropped (counted), as a full
#: backlog queue drops (netdev_max_backlog).
QUEUE_LIMIT = 1000


class Loopback:
    """A queue of the stack's frames to itself, delivered once per loop pass."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[bytes]], None]) -> None:
        self._loop = loop
        self._deliver = deliver
        self._queue: list[bytes] = []
        self._closed = False
        #: ``frames``: sent to ourselves; ``dropped``: over :data:`QUEUE_LIMIT`.
        self.counters = Counters()

    def send(self, parts: list[Buffer]) -> None:
        """Queue one frame (its parts, joined now: they may be reused after the call)."""
        if self._closed:
            return
        if len(self._queue) >= QUEUE_LIMIT:
            self.counters["dropped"] += 1
            return
        if not self._queue:
            self._loop.call_soon(self._flush)
        self._queue.append(b"".join(parts))
        self.counters["frames"] += 1

    def close(self) -> None:
        """The stack is closing: what waits is dropped, nothing more is taken."""
        self._closed = True
        self._queue = []

    def _flush(self) -> None:
        frames, self._queue = self._queue, []
        if frames and not self._closed:
            self._deliver(frames)
