"""The timer gate (modes/timergate.py): TCP timers wait for the frames queued before them.

Driven on a real event loop with a queue the test controls: ``waiting`` and ``received``
are the test's, so every release rule is exercised exactly.
"""

from __future__ import annotations

import asyncio

import pytest

from anp_async.modes.timergate import TimerGate


class Queue:
    """What the gate sees of a receive queue: frames waiting, frames received so far."""

    def __init__(self) -> None:
        self.waiting = 0
        self.received = 0

    def take(self, n: int) -> None:
        n = min(n, self.waiting)
        self.waiting -= n
        self.received += n


async def passes(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def gate_for(q: Queue, max_frames: int = 100, max_hold: float = 5.0) -> TimerGate:
    return TimerGate(
        asyncio.get_running_loop(), lambda: q.waiting > 0, lambda: q.received, max_frames,
        max_hold,
    )  # fmt: skip


async def test_nothing_waiting_runs_now() -> None:
    q = Queue()
    gate = gate_for(q)
    assert gate.hold(lambda: None) is False
    assert gate.held == 0 and gate.counters["timers_held"] == 0


async def test_held_until_the_queue_is_empty_in_order_once() -> None:
    q = Queue()
    q.waiting = 5
    gate = gate_for(q)
    ran: list[str] = []
    a, b = (lambda: ran.append("a")), (lambda: ran.append("b"))
    assert gate.hold(a) and gate.hold(b) and gate.hold(a)  # a twice: kept once, first place
    assert gate.held == 2 and gate.counters["timers_held"] == 3
    for _ in range(4):
        q.take(1)
        await passes(2)
        assert ran == []  # a frame still waits
    q.take(1)
    await passes(2)
    assert ran == ["a", "b"]
    assert gate.held == 0 and gate.counters["timers_hold_bound"] == 0
    await passes(3)
    assert ran == ["a", "b"]  # once


async def test_a_queue_that_never_empties_releases_after_max_frames() -> None:
    q = Queue()
    q.waiting = 10**6  # a flood
    gate = gate_for(q, max_frames=50)
    ran: list[str] = []
    gate.hold(lambda: ran.append("early"))
    q.take(30)
    gate.hold(lambda: ran.append("late"))  # held when 30 had been received
    q.take(19)
    await passes(2)
    assert ran == []
    q.take(1)  # 50 frames since "early" was held; 20 since "late"
    await passes(2)
    assert ran == ["early"] and gate.held == 1
    q.take(30)
    await passes(2)
    assert ran == ["early", "late"] and gate.held == 0
    assert gate.counters["timers_hold_bound"] == 2


async def test_a_mode_without_progress_releases_after_max_hold() -> None:
    q = Queue()
    q.waiting = 1
    gate = gate_for(q, max_hold=0.05)
    ran: list[bool] = []
    gate.hold(lambda: ran.append(True))
    await asyncio.sleep(0.02)
    assert ran == []
    await asyncio.sleep(0.06)
    assert ran == [True] and gate.counters["timers_hold_bound"] == 1


async def test_a_released_callback_is_not_held_again_and_one_failure_spares_the_rest() -> None:
    q = Queue()
    q.waiting = 1
    gate = gate_for(q)
    loop = asyncio.get_running_loop()
    errors: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx["exception"]))
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("broken timer")

    def rehold() -> None:
        # Frames arrive again while it runs: a released callback runs, it is not held.
        q.waiting = 3
        ran.append(f"rehold {gate.hold(rehold)}")

    gate.hold(boom)
    gate.hold(rehold)
    q.take(1)
    await passes(2)
    assert ran == ["rehold False"]
    assert [str(e) for e in errors] == ["broken timer"]
    assert gate.held == 0


@pytest.mark.parametrize("rounds", [1, 3])
async def test_holding_again_after_a_release_schedules_again(rounds: int) -> None:
    q = Queue()
    gate = gate_for(q)
    ran: list[int] = []
    for i in range(rounds):
        q.waiting = 2
        assert gate.hold(lambda i=i: ran.append(i))
        q.take(2)
        await passes(2)
    assert ran == list(range(rounds))
