"""An asyncio event loop on a virtual clock, for deterministic simulation.

The loop is asyncio's own selector loop with two changes:

- :meth:`SimEventLoop.time` returns a virtual clock. When nothing is runnable and no file
  descriptor is ready, the clock jumps to the next timer instead of sleeping: a minute of
  TCP retransmission timeouts costs a few microseconds.
- The selector is only ever polled with timeout 0. That is enough because every
  descriptor the simulation uses is a local socket pair (the in-memory wire): a frame
  written to one end is readable at the other before ``sendmsg`` returns. Ready events
  are handed back in a fixed order (by when each descriptor was first registered), never
  in the kernel's order.

Busy polling (``poll`` mode, ``adaptive`` between interrupts) keeps the ready queue
non-empty forever, so the clock would never move: when every ready callback is an idle
poll round and no watched descriptor is readable, the clock jumps to the next timer too.

Receive modes the loop drives deterministically: ``interrupt``, ``poll`` and ``adaptive``
with ``busy_poll_usecs=0``. ``coalesce`` arms a timerfd (real time) and ``adaptive``'s
busy-poll window reads ``time.monotonic()``: neither is deterministic here.
"""

from __future__ import annotations

import asyncio
import collections
import select
import selectors
from collections.abc import Callable
from typing import Any

from ..modes.adaptive import AdaptiveMode
from ..modes.poll import PollMode

__all__ = ["DETERMINISTIC_MODES", "SimEventLoop", "SimStalled"]

#: Receive modes this loop runs deterministically (see the module docstring).
DETERMINISTIC_MODES = ("interrupt", "poll", "adaptive")

#: Callbacks that only poll a NIC: when they are all that is ready and no NIC has a frame,
#: running them again changes nothing but counters, so virtual time may move on.
_IDLE_POLLS = frozenset({PollMode._round, AdaptiveMode._on_round})


class SimStalled(RuntimeError):
    """Nothing is runnable, no descriptor is ready and no timer is pending: the simulated
    world can never move again (a deadlock of the code under test)."""


class _SimSelector(selectors.BaseSelector):
    """A selector that polls with timeout 0 and turns a would-be sleep into a clock jump."""

    def __init__(self, loop_ref: Callable[[], SimEventLoop]) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop_ref = loop_ref
        #: fd -> ordinal of its first registration: the order ready events are reported in.
        self._order: dict[int, int] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = self._inner.register(fileobj, events, data)
        self._order.setdefault(key.fd, len(self._order))
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = self._inner.modify(fileobj, events, data)
        self._order.setdefault(key.fd, len(self._order))
        return key

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Any:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._inner.select(0)
        if events:
            order = self._order
            events.sort(key=lambda ev: order.get(ev[0].fd, 1 << 30))
            return events
        loop = self._loop_ref()
        if timeout is None or timeout > 0:
            loop._advance(timeout)
        elif loop._idle_spin():
            loop._advance(None)
        return []


class SimEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock is virtual (see the module docstring).

    ``start`` is the clock's first reading. ``watch_fd`` names descriptors (NICs that
    busy-polling modes read without registering them) whose readability stops a clock jump.
    ``step_hook`` runs after every iteration of the loop (the simulator checks its
    invariants there); ``max_steps`` bounds the iterations (a livelock raises SimStalled).
    """

    # BaseEventLoop's private state the clock reads (not in the type stubs).
    _scheduled: list[asyncio.TimerHandle]
    _ready: collections.deque[asyncio.Handle]

    def __init__(self, start: float = 0.0, max_steps: int = 10_000_000) -> None:
        self._now = float(start)
        self._watched: list[int] = []
        self.steps = 0
        self.max_steps = max_steps
        self.clock_jumps = 0
        self.step_hook: Callable[[], None] | None = None
        super().__init__(_SimSelector(lambda: self))
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._now

    def watch_fd(self, fd: int) -> None:
        """Treat ``fd`` as a NIC: a readable NIC means the world is not idle."""
        if fd not in self._watched:
            self._watched.append(fd)

    def unwatch_fd(self, fd: int) -> None:
        if fd in self._watched:
            self._watched.remove(fd)

    def _next_timer(self) -> float | None:
        # A heap whose cancelled entries are removed lazily: take the earliest live one.
        return min((h.when() for h in self._scheduled if not h.cancelled()), default=None)

    def _advance(self, timeout: float | None) -> None:
        """Nothing to do until the next timer: move the clock there (never backwards)."""
        target = self._next_timer()
        if target is None:
            if timeout is None:
                raise SimStalled(
                    f"simulation stalled at t={self._now:.6f}: nothing runnable, no timer"
                )
            target = self._now + timeout
        elif timeout is not None and timeout > 0 and self._now + timeout < target - 1e-9:
            target = self._now + timeout  # asyncio caps one sleep at a day
        if target > self._now:
            self._now = target
            self.clock_jumps += 1

    def _idle_spin(self) -> bool:
        """True when every ready callback is an idle NIC poll and no NIC has a frame."""
        ready = self._ready
        if not ready:
            return False
        for handle in ready:
            if handle.cancelled():
                continue
            fn = getattr(getattr(handle, "_callback", None), "__func__", None)
            if fn not in _IDLE_POLLS:
                return False
        if self._watched:
            readable, _, _ = select.select(self._watched, [], [], 0)
            if readable:
                return False
        return True

    def _run_once(self) -> None:
        super()._run_once()  # type: ignore[misc]  # private, not in the stubs
        self.steps += 1
        if self.steps > self.max_steps:
            raise SimStalled(f"simulation exceeded {self.max_steps} loop steps (livelock?)")
        hook = self.step_hook
        if hook is not None:
            hook()
