"""Coalesce mode: interrupt moderation with ``ethtool -C`` semantics.

A wake-up reads what is pending into a batch. The batch goes to the stack when
``rx_frames`` frames are pending, or ``rx_usecs`` microseconds after its first frame was
read, whichever comes first. Fewer wake-ups and bigger batches (one ACK per batch), paid
for with up to ``rx_usecs`` of added latency.

ethtool's corner cases, as here:
- ``rx_usecs=0``: no delay; whatever one wake-up read is delivered at the end of it
  (in batches of at most ``rx_frames``). With ``rx_frames=1`` too, coalescing is off.
- ``rx_frames=0``: no frame threshold, only the timer (the batch is still bounded by
  ``MAX_PENDING``).
- both 0: refused, as ethtool refuses it (the interrupt would never fire).

The timer: asyncio's own timers wake an idle loop with millisecond granularity (epoll's
timeout is in ms), which would turn rx_usecs=50 into ~1 ms. On Linux we therefore use a
``timerfd`` registered with ``add_reader``: it wakes epoll at the exact microsecond. Where
no timerfd is available we fall back to ``loop.call_later``.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import sys
from collections.abc import Callable
from time import thread_time

from ..nic.base import Nic
from .base import Deliver, RxMode, check_int

#: Upper bound of a pending batch when rx_frames=0 (timer only); also the largest
#: rx_frames accepted. A real NIC's ring is of this order.
MAX_PENDING = 4096
#: Largest rx_usecs accepted (1 s); real NICs stop far below that.
MAX_RX_USECS = 1_000_000


class _CallLaterTimer:
    """One-shot timer on ``loop.call_later`` (ms granularity when the loop is idle)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, seconds: float) -> None:
        self._handle = self._loop.call_later(seconds, self._callback)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()  # a cancelled handle never runs, even if already due
            self._handle = None

    def close(self) -> None:
        self.cancel()


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK_CLOEXEC = os.O_NONBLOCK | os.O_CLOEXEC  # TFD_* flags equal the O_* ones


def _load_libc_timerfd() -> tuple[Callable[..., int], Callable[..., int]] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None


#: os.timerfd_* arrived in Python 3.13; before that, libc's through ctypes.
_OS_TIMERFD = sys.version_info >= (3, 13)
_LIBC_TIMERFD = None if _OS_TIMERFD else _load_libc_timerfd()


def _libc_timerfd() -> tuple[Callable[..., int], Callable[..., int]]:
    if _LIBC_TIMERFD is None:
        raise OSError(errno.ENOSYS, "timerfd is not available")
    return _LIBC_TIMERFD


#: Set False to use loop.call_later instead of a timerfd (coarser, but portable).
USE_TIMERFD = True


class _TimerFd:
    """One-shot microsecond timer: a Linux timerfd watched by the loop's selector."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        if sys.version_info >= (3, 13):
            self._fd = os.timerfd_create(os.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)
        else:
            fd = _libc_timerfd()[0](_CLOCK_MONOTONIC, _TFD_NONBLOCK_CLOEXEC)
            if fd < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            self._fd = fd
        self._spec = _Itimerspec()  # reused: arm/cancel run once per batch
        self._spec_ref = ctypes.byref(self._spec)
        loop.add_reader(self._fd, self._fired)

    def _settime(self, ns: int) -> None:
        if sys.version_info >= (3, 13):
            os.timerfd_settime_ns(self._fd, initial=ns)
            return
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(ns, 1_000_000_000)
        if _libc_timerfd()[1](self._fd, 0, self._spec_ref, None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def arm(self, seconds: float) -> None:
        self._settime(max(1, int(seconds * 1e9)))  # 0 would disarm

    def cancel(self) -> None:
        # Setting a zero time disarms and clears any unread expiry, so the fd goes quiet.
        self._settime(0)

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            # Cancelled after epoll reported it in this same loop iteration: stale.
            return
        self._callback()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        os.close(self._fd)


def _make_timer(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> _TimerFd | _CallLaterTimer:
    if USE_TIMERFD and (_OS_TIMERFD or _LIBC_TIMERFD is not None):
        try:
            return _TimerFd(loop, callback)
        except OSError:
            pass
    return _CallLaterTimer(loop, callback)


class CoalesceMode(RxMode):
    """Deliver a batch when ``rx_frames`` frames are pending or ``rx_usecs`` have passed."""

    name = "coalesce"

    def __init__(self, rx_frames: int = 32, rx_usecs: int = 50) -> None:
        super().__init__()
        check_int("coalesce", "rx_frames", rx_frames, 0, MAX_PENDING)
        check_int("coalesce", "rx_usecs", rx_usecs, 0, MAX_RX_USECS)
        if rx_frames == 0 and rx_usecs == 0:
            raise ValueError(
                "coalesce: rx_frames and rx_usecs cannot both be 0 "
                "(frames would never be delivered); use rx_frames=1, rx_usecs=0 for 'off'"
            )
        self.rx_frames = rx_frames
        self.rx_usecs = rx_usecs
        self._limit = rx_frames if rx_frames > 0 else MAX_PENDING
        self._delay = rx_usecs / 1e6
        self._pending: list[bytes] = []
        self._timer: _TimerFd | _CallLaterTimer | None = None
        self._timer_armed = False
        self._fd = -1

    def params(self) -> dict[str, int]:
        return {"rx_frames": self.rx_frames, "rx_usecs": self.rx_usecs}

    @property
    def pending(self) -> int:
        """Frames read from the NIC and waiting for the batch to close."""
        return len(self._pending)

    def start(self, loop: asyncio.AbstractEventLoop, nic: Nic, deliver: Deliver) -> None:
        self._attach(loop, nic, deliver)
        self._pending = []
        self._timer_armed = False
        self._timer = _make_timer(loop, self._on_timer) if self.rx_usecs > 0 else None
        self._fd = nic.fileno()
        loop.add_reader(self._fd, self._on_readable)

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        t0 = thread_time()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._fd)
        # Frames already read belong to nobody else: deliver them now so a mode switch
        # loses nothing.
        self._flush()
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self.stats.cpu_seconds += thread_time() - t0

    def rx_waiting(self) -> bool:
        """The batch being coalesced waits too."""
        return (self.running and bool(self._pending)) or super().rx_waiting()

    def _flush(self) -> None:
        timer = self._timer
        if self._timer_armed and timer is not None:  # armed implies a timer
            self._timer_armed = False
            timer.cancel()
        batch = self._pending
        if batch:
            self._pending = []
            self._deliver(batch)

    def _on_readable(self) -> None:
        t0 = thread_time()
        stats = self.stats
        stats.wakeups += 1
        stats.interrupts += 1
        pending = self._pending
        frames = self._nic.recv_batch(self._limit - len(pending))
        if not frames:
            stats.empty_polls += 1
        else:
            if pending:
                pending.extend(frames)
            else:
                self._pending = pending = frames
            if len(pending) >= self._limit or self._timer is None:
                self._flush()
            elif not self._timer_armed:
                # The batch's first frame is here: the rx_usecs clock starts now.
                self._timer_armed = True
                self._timer.arm(self._delay)
        stats.cpu_seconds += thread_time() - t0

    def _on_timer(self) -> None:
        if not self._timer_armed:
            return
        t0 = thread_time()
        self._timer_armed = False
        batch = self._pending
        if batch:
            self.stats.timer_flushes += 1
            self._pending = []
            self._deliver(batch)
        self.stats.cpu_seconds += thread_time() - t0
