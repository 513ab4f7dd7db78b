"""``hardirq``: a model of interrupts that preempt the application, for the livelock
experiment (``anp bench livelock --modes hardirq,interrupt,adaptive``).

The stack's own ``interrupt`` mode reads one frame per pass of the event loop, so the
application runs between any two frames: the loop itself rations the interrupts. A NIC
without interrupt mitigation on a real machine does not wait for the application: every
frame raises an interrupt, and interrupt and protocol processing run at a higher priority
than any process (Mogul and Ramakrishnan, "Eliminating receive livelock in an
interrupt-driven kernel", 1997). ``HardIrqMode`` models that: a wake-up services every
frame pending -- one ``deliver`` (one "interrupt") per frame -- before it returns to the
loop, and frames that arrive meanwhile are serviced in the same wake-up. The application
therefore runs only when the receive path has nothing left to do; past the point where
receiving alone fills the CPU it never runs, and delivered throughput falls towards zero.

Bounded like everything else: a wake-up stops after :data:`MAX_FRAMES_PER_WAKEUP` frames
(counted in ``stats.timer_flushes``, reused as "wake-ups cut short").
"""

from __future__ import annotations

import asyncio
from time import thread_time

from ..modes.base import Deliver, RxMode
from ..nic.base import Nic

#: Most frames one wake-up services before the loop gets a turn.
MAX_FRAMES_PER_WAKEUP = 100_000


class HardIrqMode(RxMode):
    """Service every pending frame, one interrupt each, before yielding to the loop."""

    name = "hardirq"

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
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        t0 = thread_time()
        stats = self.stats
        stats.wakeups += 1
        nic = self._nic
        assert nic is not None
        n = 0
        while self.running and n < MAX_FRAMES_PER_WAKEUP:
            frames = nic.recv_batch(1)
            if not frames:
                break
            stats.interrupts += 1
            self._deliver(frames)
            n += 1
        else:
            if self.running:
                stats.timer_flushes += 1
        if n == 0:
            stats.empty_polls += 1
        stats.cpu_seconds += thread_time() - t0
