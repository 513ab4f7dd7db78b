"""The timer gate: a TCP timer that comes due while frames wait unread is held back
until the receive mode has taken them.

On a host each frame is taken when it arrives: its interrupt preempts whatever runs,
timers too. Here a frame waits in the NIC's queue until the mode's next turn (one frame
per loop pass in interrupt mode), and under a backlog -- 1,000 connections opening at
once -- it can wait longer than a retransmission timeout. A retransmission timer that
fired then would resend data whose ACK sits unread in the queue; the retransmissions,
the peer's DSACKs and the undoing are more frames for a stack that is already behind.
Measured (``anp bench burst --conns 1000``, interrupt mode): two timeouts and three
retransmissions per connection, most found spurious afterwards.

So the stack asks the gate before a TCP timer acts. While frames wait (the mode's
:meth:`~anp_async.modes.base.RxMode.rx_waiting`), the gate keeps the timer's callback,
checks again once per loop pass, and calls it when the queue is empty -- or once the
stack has received ``max_frames`` more frames (the NIC's queue length: by then every
frame that waited when the timer came due has been read, even if a flood keeps the queue
from emptying) -- or, should the mode make no progress at all, after ``max_hold``
seconds. The mode meanwhile keeps its own pace and batch size. Callbacks run at most once
per hold, in the order they were held; whoever is called checks again whether its timer
is still due (the input it waited for may have acknowledged the data or re-armed the
timer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..counters import Counters

#: The longest a timer is held back should the receive mode make no progress at all (s).
MAX_HOLD = 5.0


class TimerGate:
    """Holds timer callbacks while ``waiting()`` says frames wait to be received."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        waiting: Callable[[], bool],
        received: Callable[[], int],
        max_frames: int,
        max_hold: float = MAX_HOLD,
    ) -> None:
        self._loop = loop
        self._waiting = waiting
        self._received = received
        self.max_frames = max_frames
        self.max_hold = max_hold
        #: Held callbacks, oldest first, with the clock and the frames received when held.
        self._held: dict[Callable[[], None], tuple[float, int]] = {}
        self._releasing = False
        #: ``timers_held``: timer expiries held back; ``timers_hold_bound``: callbacks let
        #: through by ``max_frames`` or ``max_hold`` with frames still waiting.
        self.counters = Counters()

    @property
    def held(self) -> int:
        """Callbacks held now."""
        return len(self._held)

    def hold(self, callback: Callable[[], None]) -> bool:
        """Hold ``callback`` if frames wait to be received (True), else leave it to the
        caller to run now (False). Never holds while releasing: a released callback
        runs."""
        if self._releasing or not self._waiting():
            return False
        held = self._held
        if not held:
            self._loop.call_soon(self._release)
        if callback not in held:
            held[callback] = (self._loop.time(), self._received())
        self.counters["timers_held"] += 1
        return True

    def _release(self) -> None:
        """Once per loop pass while holding: run what the queue no longer holds back."""
        held = self._held
        if not held:
            return
        if not self._waiting():
            due = list(held)
            held.clear()
        else:
            now, received = self._loop.time(), self._received()
            due = []
            for callback, (t0, n0) in held.items():  # oldest first: stop at the first kept
                if received - n0 < self.max_frames and now - t0 < self.max_hold:
                    break
                due.append(callback)
            for callback in due:
                del held[callback]
            self.counters["timers_hold_bound"] += len(due)
        if held:
            self._loop.call_soon(self._release)
        self._run(due)

    def _run(self, due: list[Callable[[], None]]) -> None:
        self._releasing = True
        try:
            for callback in due:
                try:
                    callback()
                except Exception as e:  # one broken timer must not keep the others
                    self._loop.call_exception_handler(
                        {"message": "timer callback released by the gate failed",
                         "exception": e}
                    )  # fmt: skip
        finally:
            self._releasing = False
