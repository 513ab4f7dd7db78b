"""Receive modes against a real fd-backed NIC (a SOCK_SEQPACKET socketpair).

Each test sends numbered frames into the NIC and checks that every mode hands them to
``deliver`` exactly once, in order, with counters that agree with what happened.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from anp_async.modes import MODES, RxMode, make_mode
from anp_async.modes import coalesce as coalesce_module
from anp_async.modes.adaptive import AdaptiveMode
from anp_async.modes.coalesce import CoalesceMode
from anp_async.modes.poll import PollMode
from anp_async.nic.base import Buffer, Nic

#: A burst this size fits in a socketpair's default send buffer (~270 small frames).
BURST = 200


class PairNic(Nic):
    """A NIC whose wire is a SOCK_SEQPACKET socketpair: one datagram per frame."""

    def __init__(self) -> None:
        super().__init__()
        self._sock, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock.setblocking(False)
        self.peer.setblocking(False)
        self.sent = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv_batch(self, max_frames: int = 64) -> list[bytes]:
        frames: list[bytes] = []
        try:
            while len(frames) < max_frames:
                frames.append(self._sock.recv(2048))
        except BlockingIOError:
            pass
        self.stats.rx_frames += len(frames)
        return frames

    def send(self, parts: Sequence[Buffer]) -> None:
        self._sock.sendmsg(parts)

    def close(self) -> None:
        self._sock.close()
        self.peer.close()

    def inject(self, count: int) -> None:
        """The far end sends the next ``count`` numbered frames."""
        for _ in range(count):
            self.peer.send(frame(self.sent))
            self.sent += 1


def frame(i: int) -> bytes:
    return b"frame-%06d" % i


def expected(n: int) -> list[bytes]:
    return [frame(i) for i in range(n)]


class Sink:
    """A deliver() that records every batch."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.frames: list[bytes] = []

    def __call__(self, frames: list[bytes]) -> None:
        self.batches.append(list(frames))
        self.frames.extend(frames)


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


@pytest.fixture
def nic() -> Iterator[PairNic]:
    n = PairNic()
    try:
        yield n
    finally:
        n.close()


# -- make_mode ---------------------------------------------------------------------------


def test_make_mode_defaults_and_params() -> None:
    assert MODES == ("interrupt", "coalesce", "poll", "adaptive")
    assert make_mode("interrupt").params() == {}
    assert make_mode("coalesce").params() == {"rx_frames": 32, "rx_usecs": 50}
    assert make_mode("poll").params() == {"budget": 64}
    assert make_mode("adaptive").params() == {"weight": 64, "busy_poll_usecs": 0}
    everything = dict(rx_frames=4, rx_usecs=7, budget=9, weight=11, busy_poll_usecs=13)
    assert make_mode("coalesce", **everything).params() == {"rx_frames": 4, "rx_usecs": 7}
    assert make_mode("poll", **everything).params() == {"budget": 9}
    assert make_mode("adaptive", **everything).params() == {"weight": 11, "busy_poll_usecs": 13}
    assert make_mode("interrupt", **everything).name == "interrupt"
    assert make_mode("poll", budget=None).params() == {"budget": 64}


@pytest.mark.parametrize(
    "name, params, words",
    [
        ("napi", {}, "unknown receive mode"),
        ("poll", {"budgte": 3}, "unknown receive-mode parameter"),
        ("poll", {"budget": 0}, "budget must be an integer"),
        ("poll", {"budget": 2.5}, "budget must be an integer"),
        ("poll", {"budget": True}, "budget must be an integer"),
        ("adaptive", {"weight": -1}, "weight must be an integer"),
        ("adaptive", {"busy_poll_usecs": -5}, "busy_poll_usecs must be an integer"),
        ("coalesce", {"rx_frames": -1}, "rx_frames must be an integer"),
        ("coalesce", {"rx_usecs": "50"}, "rx_usecs must be an integer"),
        ("coalesce", {"rx_frames": 0, "rx_usecs": 0}, "cannot both be 0"),
    ],
)
def test_make_mode_rejects(name: str, params: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        make_mode(name, **params)


# -- every mode: exactly once, in order ----------------------------------------------------


@pytest.mark.parametrize("name", MODES)
async def test_frames_arrive_once_in_order(nic: PairNic, name: str) -> None:
    mode = make_mode(name, rx_frames=8, rx_usecs=200, budget=16, weight=16)
    sink = Sink()
    mode.start(asyncio.get_running_loop(), nic, sink)
    try:
        total = 0
        for burst in (1, 3, 40, 1, BURST, 7):
            nic.inject(burst)
            total += burst
            await wait_until(lambda t=total: len(sink.frames) == t)
            await asyncio.sleep(0.002)
    finally:
        mode.stop()
    assert sink.frames == expected(total)
    s = mode.stats
    assert s.frames == total
    assert s.batches == len(sink.batches)
    assert all(sink.batches)  # no empty deliver() calls
    assert s.batches <= s.frames
    assert s.deliver_errors == 0
    assert s.cpu_seconds > 0
    assert s.wakeups >= 1
    if name == "interrupt":
        assert s.batches == s.frames
        assert s.interrupts == s.wakeups >= s.frames
    if name == "poll":
        assert s.interrupts == 0
        assert s.poll_rounds == s.wakeups
    if name == "poll":
        assert max(map(len, sink.batches)) <= 16
    if name == "adaptive":
        assert len(sink.batches[0]) == 1  # the weight, then doubling while rounds are full
        assert max(map(len, sink.batches)) <= 16 * 2 ** 3
    if name == "coalesce":
        assert max(map(len, sink.batches)) <= 8
    # Stopped: frames now stay in the NIC for the next mode.
    nic.inject(5)
    await asyncio.sleep(0.02)
    assert len(sink.frames) == total
    assert nic.recv_batch(10) == [frame(total + i) for i in range(5)]


@pytest.mark.parametrize("name", MODES)
async def test_mode_restarts_after_stop(nic: PairNic, name: str) -> None:
    loop = asyncio.get_running_loop()
    mode = make_mode(name, rx_usecs=100)
    sink = Sink()
    mode.start(loop, nic, sink)
    with pytest.raises(RuntimeError, match="already running"):
        mode.start(loop, nic, sink)
    nic.inject(3)
    await wait_until(lambda: len(sink.frames) == 3)
    mode.stop()
    mode.stop()  # idempotent
    assert not mode.running
    mode.start(loop, nic, sink)
    nic.inject(3)
    await wait_until(lambda: len(sink.frames) == 6)
    mode.stop()
    assert sink.frames == expected(6)
    assert mode.stats.frames == 6


# -- coalesce -----------------------------------------------------------------------------


async def test_coalesce_groups_by_rx_frames_and_flushes_after_rx_usecs(nic: PairNic) -> None:
    mode = CoalesceMode(rx_frames=8, rx_usecs=100_000)  # 100 ms: far longer than the test's
    sink = Sink()  # own steps, so only the timer can release the remainder
    mode.start(asyncio.get_running_loop(), nic, sink)
    try:
        # On Linux the rx_usecs timer is a timerfd (microsecond wake-ups, not asyncio's ms).
        assert isinstance(mode._timer, coalesce_module._TimerFd)
        sent_at = time.monotonic()
        nic.inject(20)
        await wait_until(lambda: len(sink.frames) >= 16)
        await asyncio.sleep(0.01)
        assert [len(b) for b in sink.batches] == [8, 8]
        assert mode.pending == 4
        assert mode.stats.timer_flushes == 0
        await wait_until(lambda: len(sink.frames) == 20)
        # The timer cannot fire before rx_usecs after the first frame, read after sent_at.
        assert time.monotonic() - sent_at >= 0.1
        assert [len(b) for b in sink.batches] == [8, 8, 4]
        assert mode.stats.timer_flushes == 1
        assert mode.pending == 0
        # The rx_frames threshold cancels a running timer: 3 pending, then 5 more.
        nic.inject(3)
        await wait_until(lambda: mode.pending == 3)
        nic.inject(5)
        await wait_until(lambda: len(sink.frames) == 28)
        assert [len(b) for b in sink.batches] == [8, 8, 4, 8]
        await asyncio.sleep(0.15)
        assert mode.stats.timer_flushes == 1  # the cancelled timer did not fire later
        assert len(sink.batches) == 4
    finally:
        mode.stop()
    assert sink.frames == expected(28)
    assert mode.stats.frames == 28 and mode.stats.batches == 4


@pytest.mark.parametrize("rx_frames", [1, 8])
async def test_coalesce_rx_usecs_zero_delivers_immediately(nic: PairNic, rx_frames: int) -> None:
    mode = CoalesceMode(rx_frames=rx_frames, rx_usecs=0)
    sink = Sink()
    mode.start(asyncio.get_running_loop(), nic, sink)
    try:
        for i in range(5):
            nic.inject(1)
            await wait_until(lambda i=i: len(sink.frames) == i + 1)
            assert mode.pending == 0
        nic.inject(20)
        await wait_until(lambda: len(sink.frames) == 25)
    finally:
        mode.stop()
    assert sink.frames == expected(25)
    assert mode.stats.timer_flushes == 0
    assert max(map(len, sink.batches)) <= rx_frames
    if rx_frames == 1:
        assert mode.stats.batches == mode.stats.frames == 25


async def test_coalesce_rx_frames_zero_uses_timer_only(nic: PairNic) -> None:
    mode = CoalesceMode(rx_frames=0, rx_usecs=20_000)
    sink = Sink()
    mode.start(asyncio.get_running_loop(), nic, sink)
    try:
        nic.inject(50)
        await wait_until(lambda: len(sink.frames) == 50)
    finally:
        mode.stop()
    assert sink.frames == expected(50)
    assert mode.stats.timer_flushes >= 1


async def test_coalesce_call_later_fallback(nic: PairNic, monkeypatch) -> None:
    # Where no timerfd exists the timer is loop.call_later; it must behave the same.
    monkeypatch.setattr(coalesce_module, "USE_TIMERFD", False)
    mode = CoalesceMode(rx_frames=8, rx_usecs=5_000)
    sink = Sink()
    mode.start(asyncio.get_running_loop(), nic, sink)
    try:
        assert isinstance(mode._timer, coalesce_module._CallLaterTimer)
        nic.inject(11)
        await wait_until(lambda: len(sink.frames) == 11)
    finally:
        mode.stop()
    assert [len(b) for b in sink.batches] == [8, 3]
    assert mode.stats.timer_flushes == 1


async def test_coalesce_stop_flushes_pending_batch(nic: PairNic) -> None:
    mode = CoalesceMode(rx_frames=64, rx_usecs=1_000_000)
    sink = Sink()
    mode.start(asyncio.get_running_loop(), nic, sink)
    nic.inject(10)
    await wait_until(lambda: mode.pending == 10)
    assert sink.frames == []
    mode.stop()
    assert sink.frames == expected(10)
    assert mode.stats.timer_flushes == 0


# -- poll ---------------------------------------------------------------------------------


async def test_poll_spins_counts_empty_polls_and_lets_others_run(nic: PairNic) -> None:
    mode = PollMode(budget=8)
    sink = Sink()
    mode.start(asyncio.get_running_loop(), nic, sink)
    try:
        ticks = 0

        async def other_task() -> None:
            nonlocal ticks
            for _ in range(20):
                ticks += 1
                await asyncio.sleep(0)

        before = mode.stats.poll_rounds
        await asyncio.gather(asyncio.sleep(0.01), other_task())  # both finish while polling
        assert ticks == 20
        assert mode.stats.poll_rounds > before
        assert mode.stats.empty_polls > 0
        nic.inject(30)
        await wait_until(lambda: len(sink.frames) == 30)
    finally:
        mode.stop()
    rounds = mode.stats.poll_rounds
    await asyncio.sleep(0.01)
    assert mode.stats.poll_rounds == rounds  # stop() really stopped the spinning
    assert sink.frames == expected(30)
    assert max(map(len, sink.batches)) <= 8
    assert mode.stats.interrupts == 0
    assert mode.stats.empty_polls + mode.stats.batches == mode.stats.poll_rounds


# -- adaptive -----------------------------------------------------------------------------


async def test_adaptive_polls_under_burst_and_rearms_when_idle(nic: PairNic) -> None:
    mode = AdaptiveMode(weight=16)
    seen_polling: list[bool] = []
    sink = Sink()

    def deliver(frames: list[bytes]) -> None:
        seen_polling.append(mode.polling)
        sink(frames)

    mode.start(asyncio.get_running_loop(), nic, deliver)
    try:
        assert mode.polling is False
        nic.inject(BURST)  # 200 = full rounds of 16, 32, 64 (each doubles the next) + 88
        await wait_until(lambda: len(sink.frames) == BURST)
        assert all(seen_polling)
        await wait_until(lambda: not mode.polling)
        # One interrupt for the whole burst, then polling until a round came up short.
        assert mode.stats.interrupts == 1
        assert [len(b) for b in sink.batches] == [16, 32, 64, 88]
        assert mode.stats.poll_rounds == 4
        assert mode.stats.wakeups == 1 + 3  # the interrupt ran the first round itself
        assert mode.budget == 16  # the short round drained the queue: back to the weight
        # Idle: no further wake-ups.
        await asyncio.sleep(0.02)
        assert mode.stats.wakeups == 4
        # A lone frame takes one interrupt and re-arms at once.
        nic.inject(1)
        await wait_until(lambda: len(sink.frames) == BURST + 1)
        await wait_until(lambda: not mode.polling)
        assert mode.stats.interrupts == 2
    finally:
        mode.stop()
    assert sink.frames == expected(BURST + 1)
    assert mode.stats.empty_polls == 0


async def test_adaptive_round_growth_is_bounded(nic: PairNic) -> None:
    mode = AdaptiveMode(weight=4)
    sink = Sink()
    mode.start(asyncio.get_running_loop(), nic, sink)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("anp_async.modes.adaptive.GROWTH_FRAMES", 16)
            nic.inject(100)
            await wait_until(lambda: len(sink.frames) == 100)
            await wait_until(lambda: not mode.polling)
        # 4, 8, 16, then 16 at most per round (the bound), then the remainder.
        assert [len(b) for b in sink.batches] == [4, 8, 16, 16, 16, 16, 16, 8]
        assert mode.budget == 4
    finally:
        mode.stop()
    assert sink.frames == expected(100)


async def test_adaptive_busy_poll_window(nic: PairNic) -> None:
    mode = AdaptiveMode(weight=64, busy_poll_usecs=30_000)
    sink = Sink()
    mode.start(asyncio.get_running_loop(), nic, sink)
    try:
        nic.inject(1)
        await wait_until(lambda: len(sink.frames) == 1)
        assert mode.polling  # keeps polling inside the busy-poll window
        nic.inject(2)  # arrives inside the window: no new interrupt
        await wait_until(lambda: len(sink.frames) == 3)
        assert mode.stats.interrupts == 1
        await wait_until(lambda: not mode.polling)
        assert mode.stats.empty_polls > 0
        nic.inject(1)
        await wait_until(lambda: len(sink.frames) == 4)
        assert mode.stats.interrupts == 2
    finally:
        mode.stop()
    assert sink.frames == expected(4)


# -- switching modes ----------------------------------------------------------------------


class Switcher:
    """What the stack does on set_mode: old.stop(); new = make_mode(...); new.start(...)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, nic: Nic) -> None:
        self.loop = loop
        self.nic = nic
        self.sink = Sink()
        self.mode: RxMode | None = None
        self.switches = 0

    def switch(self, name: str) -> None:
        if self.mode is not None:
            self.mode.stop()
        self.mode = make_mode(name, rx_frames=8, rx_usecs=500_000, budget=8, weight=8)
        self.mode.start(self.loop, self.nic, self.deliver)
        self.switches += 1

    def deliver(self, frames: list[bytes]) -> None:
        self.sink(frames)


async def test_switching_modes_mid_stream_loses_and_duplicates_nothing(nic: PairNic) -> None:
    sw = Switcher(asyncio.get_running_loop(), nic)
    order = list(MODES) * 4
    sw.switch("interrupt")
    try:
        for step, name in enumerate(order):
            nic.inject(5 + step % 7)
            # Vary how far the old mode got: not at all, a few loop passes, a while.
            for _ in range(step % 4):
                await asyncio.sleep(0)
            if step % 5 == 4:
                await asyncio.sleep(0.003)
            sw.switch(name)
        nic.inject(30)
        sw.switch("interrupt")
        await wait_until(lambda: len(sw.sink.frames) >= nic.sent)
        await asyncio.sleep(0.01)
    finally:
        sw.mode.stop()
    assert sw.sink.frames == expected(nic.sent)


async def test_switching_from_inside_deliver(nic: PairNic) -> None:
    # An application may switch modes while handling data, i.e. inside deliver().
    loop = asyncio.get_running_loop()
    sw = Switcher(loop, nic)
    names = iter(list(MODES) * 6)

    def deliver(frames: list[bytes]) -> None:
        sw.sink(frames)
        name = next(names, None)
        if name is not None:
            sw.switch(name)

    sw.deliver = deliver  # type: ignore[method-assign]
    sw.switch("adaptive")
    try:
        for _ in range(6):
            nic.inject(25)
            await asyncio.sleep(0.002)
        await wait_until(lambda: len(sw.sink.frames) == nic.sent)
        await asyncio.sleep(0.01)
    finally:
        sw.mode.stop()
    assert sw.sink.frames == expected(nic.sent)
    assert sw.switches > 10


# -- a failing deliver ---------------------------------------------------------------------


@pytest.mark.parametrize("name", MODES)
async def test_raising_deliver_is_counted_and_mode_survives(
    nic: PairNic, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    mode = make_mode(name, rx_frames=4, rx_usecs=1000, budget=4, weight=4)
    sink = Sink()
    calls = 0

    def deliver(frames: list[bytes]) -> None:
        nonlocal calls
        calls += 1
        sink(frames)
        if calls % 2:
            raise RuntimeError("stack bug")

    caplog.set_level(logging.ERROR, logger="anp_async.modes")
    mode.start(asyncio.get_running_loop(), nic, deliver)
    try:
        for _ in range(5):
            nic.inject(6)
            await asyncio.sleep(0.003)
        await wait_until(lambda: len(sink.frames) == 30)
    finally:
        mode.stop()
    assert sink.frames == expected(30)
    assert mode.stats.deliver_errors == (calls + 1) // 2 >= 1
    assert mode.stats.frames == 30
    assert any("deliver() raised" in r.getMessage() for r in caplog.records)
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


# -- rx_waiting: what the timer gate asks -----------------------------------------------


@pytest.mark.parametrize("name", MODES)
async def test_rx_waiting_tells_queued_and_held_frames(nic: PairNic, name: str) -> None:
    loop = asyncio.get_running_loop()
    sink = Sink()
    params = {"rx_frames": 8, "rx_usecs": 200_000} if name == "coalesce" else {}
    mode = make_mode(name, **params)
    assert not mode.rx_waiting()  # not started
    mode.start(loop, nic, sink)
    try:
        assert not mode.rx_waiting()
        nic.inject(3)
        assert mode.rx_waiting()  # readable on the NIC, nothing read yet
        await wait_until(lambda: not nic_readable(nic))
        # Coalesce holds the three (rx_frames 8, a long rx_usecs): still waiting for the
        # stack; the others delivered them.
        assert mode.rx_waiting() is (name == "coalesce")
        assert sink.frames == ([] if name == "coalesce" else expected(3))
    finally:
        mode.stop()
    assert sink.frames == expected(3)
    assert not mode.rx_waiting()  # stopped


def nic_readable(nic: PairNic) -> bool:
    return bool(select.select([nic.fileno()], [], [], 0)[0])
