"""Adaptive mode: the NAPI hybrid of interrupts and polling.

Idle, the mode waits for an interrupt (``add_reader``). The first interrupt masks it
(``remove_reader``) and the mode polls, ``weight`` frames per round, one round per pass of
the event loop (``loop.call_soon``) so the application runs between rounds. A round that
uses its whole budget means more is waiting: keep polling. A round that gets fewer
frames has drained the queue: re-arm the interrupt -- optionally only after
``busy_poll_usecs`` more of polling without a frame (the ``busy_poll`` window that trades
a little CPU for the latency of the next interrupt). Under load it behaves like poll mode
(no interrupt storm, no livelock); idle it costs nothing.

The first round runs inside the interrupt callback itself, as NAPI's softirq runs on
interrupt exit: scheduling it with call_soon would only add a loop pass of latency.

Under a backlog the round grows: a round that used its whole budget doubles the next
one's (up to ``GROWTH_FRAMES`` frames, and no further once a round brought
``GROWTH_BYTES``); a round that drains the queue goes back to ``weight``. With a thousand
connections in the queue a 64-frame round gives each one a frame, and every frame then
costs its connection an output pass, an ACK and an application wake-up of its own; larger
rounds coalesce them as GRO does (1000 x 64 KiB echoes: stack CPU per connection -35%).
Request/response rounds never fill, so they keep the weight's latency.
"""

from __future__ import annotations

import asyncio
from time import monotonic, thread_time

from ..nic.base import Nic
from .base import Deliver, RxMode, check_int

#: Largest weight accepted (frames per round).
MAX_WEIGHT = 4096
#: Largest busy-poll window accepted (1 s).
MAX_BUSY_POLL_USECS = 1_000_000
#: Under a backlog the round's budget grows (see ``_poll_round``) up to this many frames,
#: and stops growing once a round brought this many bytes (64 KiB offload frames stay at
#: the weight's 64).
GROWTH_FRAMES = 4096
GROWTH_BYTES = 4 << 20


class AdaptiveMode(RxMode):
    """Interrupt when idle, poll with ``weight`` frames per round while busy."""

    name = "adaptive"

    def __init__(self, weight: int = 64, busy_poll_usecs: int = 0) -> None:
        super().__init__()
        self.weight = check_int("adaptive", "weight", weight, 1, MAX_WEIGHT)
        self.busy_poll_usecs = check_int(
            "adaptive", "busy_poll_usecs", busy_poll_usecs, 0, MAX_BUSY_POLL_USECS
        )
        self._window = busy_poll_usecs / 1e6
        #: Frames the next round may read: ``weight``, more while rounds come back full.
        self.budget = self.weight
        #: True while the interrupt is masked and the mode is polling.
        self.polling = False
        self._busy_until = 0.0
        self._handle: asyncio.Handle | None = None
        self._fd = -1

    def params(self) -> dict[str, int]:
        return {"weight": self.weight, "busy_poll_usecs": self.busy_poll_usecs}

    def start(self, loop: asyncio.AbstractEventLoop, nic: Nic, deliver: Deliver) -> None:
        self._attach(loop, nic, deliver)
        self._fd = nic.fileno()
        self._arm()

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        self.polling = False
        # Every frame a round reads is delivered within that round: nothing to flush.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._fd)  # harmless when the interrupt is masked
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        self.polling = False
        # Re-arm race: frames that arrived between the last recv_batch and this call are
        # not lost. The selector is level-triggered, so the fd is still readable and the
        # loop calls _on_interrupt on its next pass (NAPI has the same window and closes
        # it by re-checking the ring after napi_complete; level triggering does it here).
        self._loop.add_reader(self._fd, self._on_interrupt)

    def _on_interrupt(self) -> None:
        t0 = thread_time()
        stats = self.stats
        stats.wakeups += 1
        stats.interrupts += 1
        self.polling = True
        self._busy_until = monotonic() + self._window
        keep_polling = self._poll_round()
        if self.running:  # else deliver() switched modes and the fd is no longer ours
            if keep_polling:
                # NAPI: mask the interrupt while polling.
                self._loop.remove_reader(self._fd)
                self._handle = self._loop.call_soon(self._on_round)
            else:
                # Drained in the first round: masking and unmasking at once would be two
                # epoll_ctl calls that change nothing, so the interrupt simply stays armed.
                self.polling = False
        stats.cpu_seconds += thread_time() - t0

    def _on_round(self) -> None:
        t0 = thread_time()
        self._handle = None
        self.stats.wakeups += 1
        keep_polling = self._poll_round()
        if self.running:
            if keep_polling:
                self._handle = self._loop.call_soon(self._on_round)
            else:
                self._arm()
        self.stats.cpu_seconds += thread_time() - t0

    def _poll_round(self) -> bool:
        """Read and deliver up to ``weight`` frames; True when polling should go on."""
        stats = self.stats
        stats.poll_rounds += 1
        budget = self.budget
        frames = self._nic.recv_batch(budget)
        n = len(frames)
        if n:
            self._deliver(frames)
        else:
            stats.empty_polls += 1
        if n >= budget:
            # Whole budget used: the queue probably holds more. Keep polling, one round
            # per loop pass so everything else that is ready runs in between (no livelock).
            # A backlog of small frames of many connections gives each only a frame or
            # two per round, and each costs its own output pass; a larger next round
            # coalesces them, as GRO does (bounded in frames and bytes).
            if budget < GROWTH_FRAMES and sum(map(len, frames)) < GROWTH_BYTES:
                self.budget = min(budget * 2, GROWTH_FRAMES)
            return True
        self.budget = self.weight
        if self._window:
            # The busy-poll window restarts at every frame: re-arm only after a whole
            # window with nothing received.
            now = monotonic()
            if n:
                self._busy_until = now + self._window
            return now < self._busy_until
        return False
