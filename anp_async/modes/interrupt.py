"""Interrupt mode: one wake-up per frame.

The NIC's fd is registered with ``loop.add_reader``; every time it is readable the loop
calls us and we read exactly one frame. When more frames are pending the fd stays
readable (level-triggered) and the loop calls again on its next iteration: one event-loop
round trip and one ``deliver`` per frame. That per-frame cost is the point of this mode:
it is the "interrupt storm" that coalescing and NAPI exist to avoid.
"""

from __future__ import annotations

import asyncio
from time import thread_time

from ..nic.base import Nic
from .base import Deliver, RxMode


class InterruptMode(RxMode):
    """Read and deliver exactly one frame per fd-readable callback."""

    name = "interrupt"

    def __init__(self) -> None:
        super().__init__()
        self._fd = -1

    def start(self, loop: asyncio.AbstractEventLoop, nic: Nic, deliver: Deliver) -> None:
        self._attach(loop, nic, deliver)
        self._fd = nic.fileno()
        loop.add_reader(self._fd, self._on_readable)

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        # Nothing is ever held between callbacks: every frame read is delivered at once.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        t0 = thread_time()
        stats = self.stats
        stats.wakeups += 1
        stats.interrupts += 1
        frames = self._nic.recv_batch(1)
        if frames:
            self._deliver(frames)
        else:
            stats.empty_polls += 1  # spurious wake-up (e.g. another reader drained the fd)
        stats.cpu_seconds += thread_time() - t0
