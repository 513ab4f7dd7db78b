"""Poll mode: busy polling (``SO_BUSY_POLL`` style). No interrupts at all.

Each round reads up to ``budget`` frames without waiting and delivers them, then yields to
the event loop so the application's callbacks, tasks and timers run before the next
round. The rounds form a self-rescheduling ``loop.call_soon`` chain rather than a Task:
a plain handle costs less than a task step, and because the ready queue is never empty
the loop's selector is always called with timeout 0 -- the loop never sleeps. It burns a
core for the lowest latency; that is the trade this mode exists to show.
"""

from __future__ import annotations

import asyncio
from time import thread_time

from ..nic.base import Nic
from .base import Deliver, RxMode, check_int

#: Largest budget accepted (frames per round).
MAX_BUDGET = 4096


class PollMode(RxMode):
    """Spin on non-blocking reads of up to ``budget`` frames, one round per loop pass."""

    name = "poll"

    def __init__(self, budget: int = 64) -> None:
        super().__init__()
        self.budget = check_int("poll", "budget", budget, 1, MAX_BUDGET)
        self._handle: asyncio.Handle | None = None

    def params(self) -> dict[str, int]:
        return {"budget": self.budget}

    def start(self, loop: asyncio.AbstractEventLoop, nic: Nic, deliver: Deliver) -> None:
        self._attach(loop, nic, deliver)
        self._handle = loop.call_soon(self._round)

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        # Every frame a round reads is delivered within that round: nothing to flush.
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _round(self) -> None:
        t0 = thread_time()
        stats = self.stats
        stats.wakeups += 1
        stats.poll_rounds += 1
        frames = self._nic.recv_batch(self.budget)
        if frames:
            self._deliver(frames)
        else:
            stats.empty_polls += 1
        # deliver() may have stopped us (a mode switch from the application).
        if self.running:
            self._handle = self._loop.call_soon(self._round)
        stats.cpu_seconds += thread_time() - t0
