"""The receive-mode interface: how and when frames move from a NIC into the stack.

A mode owns the NIC's receive side while it runs. It reads frames with
``nic.recv_batch(n)`` and hands each batch to ``deliver(frames)``; the stack processes the
whole batch and flushes its output once per call (one ACK per batch, like GRO). Nothing
outside ``anp_async.modes`` knows which mode runs.

CPU accounting: ``stats.cpu_seconds`` is the thread CPU time (``time.thread_time()``)
spent inside the mode's own callbacks, and it *includes* the time ``deliver`` takes, i.e.
the stack's processing of the frames. That is what a mode costs the machine per frame.
"""

from __future__ import annotations

import asyncio
import logging
import select
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..nic.base import Nic

Deliver = Callable[[list[bytes]], None]

log = logging.getLogger("anp_async.modes")

#: A deliver() failure is logged for the first few occurrences and then only when the
#: count reaches a power of two, so a broken stack cannot flood the log at line rate.
_LOG_FIRST_ERRORS = 5


def check_int(mode: str, pname: str, value: object, lo: int, hi: int) -> int:
    """Validate an integer mode parameter; raise ValueError with a sentence that says why."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{mode}: {pname} must be an integer from {lo} to {hi}, got {value!r}")
    return value


@dataclass(slots=True)
class ModeStats:
    """What a mode did: the figures that show its cost and benefit."""

    wakeups: int = 0  # reader callbacks (interrupts) plus poll rounds that ran
    frames: int = 0  # frames delivered to the stack
    batches: int = 0  # deliver() calls
    empty_polls: int = 0  # poll rounds / wake-ups that found nothing
    cpu_seconds: float = 0.0  # thread CPU time inside the mode's callbacks, deliver included
    interrupts: int = 0  # reader (fd readable) callbacks
    poll_rounds: int = 0  # poll rounds (poll and adaptive modes)
    timer_flushes: int = 0  # coalesce batches delivered because rx_usecs expired
    deliver_errors: int = 0  # deliver() calls that raised (the mode keeps running)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class RxMode(ABC):
    """One receive mode. ``start`` begins delivering frames, ``stop`` ends it.

    ``stop`` must deliver every frame the mode has already read from the NIC before it
    returns (a batch waiting for its coalescing timer is flushed), so switching modes
    never loses a frame: frames still in the NIC's queue are read by the next mode.
    ``stop`` may be called from inside ``deliver`` (an application switching modes while
    handling data); the mode then finishes the batch in hand and reads nothing more.
    A stopped mode may be started again.
    """

    name: str = "?"

    def __init__(self) -> None:
        self.stats = ModeStats()
        self.running = False
        # Set by start() (_attach); nothing reads them before (stop() checks ``running``).
        self._loop: asyncio.AbstractEventLoop
        self._nic: Nic
        self._deliver_fn: Deliver
        self._poller: select.poll | None = None

    @abstractmethod
    def start(self, loop: asyncio.AbstractEventLoop, nic: Nic, deliver: Deliver) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def params(self) -> dict[str, int]:
        """The mode's parameters (for ``stats()`` and the CLI)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"<{type(self).__name__} {self.name}({args}) running={self.running}>"

    def rx_waiting(self) -> bool:
        """True while frames wait for this mode: readable on the NIC (one ``poll`` with
        no timeout), or read and held by the mode (coalesce). The stack's timer gate
        (``modes/timergate.py``) asks this before a TCP timer acts."""
        poller = self._poller
        return self.running and poller is not None and bool(poller.poll(0))

    # -- helpers for the concrete modes -------------------------------------------------

    def _attach(self, loop: asyncio.AbstractEventLoop, nic: Nic, deliver: Deliver) -> None:
        """Record what ``start`` was given; refuse a second start while running."""
        if self.running:
            raise RuntimeError(f"receive mode {self.name!r} is already running")
        self._loop = loop
        self._nic = nic
        self._deliver_fn = deliver
        self._poller = select.poll()
        self._poller.register(nic.fileno(), select.POLLIN)
        self.running = True

    def _deliver(self, frames: list[bytes]) -> None:
        """Hand one batch to the stack; a raising deliver is counted and logged, not fatal."""
        stats = self.stats
        stats.batches += 1
        stats.frames += len(frames)
        try:
            self._deliver_fn(frames)
        except Exception:
            stats.deliver_errors += 1
            n = stats.deliver_errors
            if n <= _LOG_FIRST_ERRORS or n & (n - 1) == 0:
                log.exception(
                    "%s mode: deliver() raised on a batch of %d frames (error #%d)",
                    self.name,
                    len(frames),
                    n,
                )
