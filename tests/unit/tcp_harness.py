"""A tiny simulated network for two sans-I/O TcpConnection engines (tests only).

``TcpPair`` joins an active opener A and a passive side B (created by ``accept_syn`` when
A's SYN arrives, as a listener would) with a fixed one-way delay and an optional drop /
duplicate hook, and drives both with a simulated clock: deliver what is due, fire what timers
are due, let the "applications" act (write pending data, read everything, half-close),
collect ``output(now)``. Optionally every segment goes through ``build_tcp``/``parse_tcp``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from anp_async.proto.tcp import (
    Closed,
    Connected,
    DataReceived,
    EofReceived,
    TcpConfig,
    TcpConnection,
    TcpSegment,
    build_tcp,
    parse_tcp,
)
from anp_async.proto.tcp.segment import TcpOptions

IP_A = bytes([10, 0, 0, 1])
IP_B = bytes([10, 0, 0, 2])
PORT_A = 40000
PORT_B = 7

# drop(direction "ab" or "ba", segment, index in that direction) -> True to drop
DropHook = Callable[[str, TcpSegment, int], bool]


@dataclass
class App:
    """The application on one end: what it still has to write, what it has read."""

    conn: TcpConnection | None = None
    to_send: memoryview = field(default_factory=lambda: memoryview(b""))
    received: bytearray = field(default_factory=bytearray)
    auto_read: bool = True
    shutdown_when_sent: bool = False
    events: list = field(default_factory=list)
    connected: bool = False
    eof: bool = False
    closed: str | None = None

    def act(self, now: float) -> None:
        conn = self.conn
        if conn is None:
            return
        if self.to_send:
            n = conn.send(self.to_send, now)
            self.to_send = self.to_send[n:]
        if self.shutdown_when_sent and not self.to_send:
            conn.shutdown(now)
            self.shutdown_when_sent = False
        for ev in conn.take_events():
            self.events.append(ev)
            if isinstance(ev, Connected):
                self.connected = True
            elif isinstance(ev, EofReceived):
                self.eof = True
            elif isinstance(ev, Closed):
                assert self.closed is None, "Closed emitted twice"
                self.closed = ev.reason
            elif isinstance(ev, DataReceived) and self.auto_read:
                self.received += conn.recv()


def copy_segment(seg: TcpSegment) -> TcpSegment:
    """A deep copy whose payload no longer refers to the sender's buffer."""
    o = seg.options
    opts = None
    if o is not None:
        opts = TcpOptions(o.mss, o.wscale, o.sack_permitted, o.sack_blocks, o.timestamp)
    return TcpSegment(
        seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window,
        bytes(seg.payload), opts, seg.urg,
    )  # fmt: skip


class TcpPair:
    """Two engines on a simulated link (see module docstring)."""

    def __init__(
        self,
        cfg_a: TcpConfig | None = None,
        cfg_b: TcpConfig | None = None,
        delay: float = 0.005,
        wire: bool = False,
        drop: DropHook | None = None,
        iss_a: int = 1000,
        iss_b: int = 5000,
        start: float = 0.0,
        bandwidth: float | None = None,
    ) -> None:
        self.cfg_a = cfg_a or TcpConfig()
        self.cfg_b = cfg_b or TcpConfig()
        self.delay = delay
        self.bandwidth = bandwidth  # bytes/s per direction; None = infinitely fast
        self._link_free = {"ab": start, "ba": start}
        self.wire = wire
        self.drop = drop
        self.iss_b = iss_b
        self.now = start
        self.a = App()
        self.b = App()
        self.a.conn = TcpConnection.connect(self.cfg_a, IP_A, PORT_A, IP_B, PORT_B, iss_a, start)
        self._queue: list[tuple[float, int, str, TcpSegment]] = []
        self._seq = itertools.count()
        self.sent = {"ab": 0, "ba": 0}
        self.log: list[tuple[float, str, TcpSegment]] = []
        self.keep_log = False

    def _transmit(self, direction: str, segs: list[TcpSegment]) -> None:
        for seg in segs:
            idx = self.sent[direction]
            self.sent[direction] += 1
            if self.keep_log:
                self.log.append((self.now, direction, copy_segment(seg)))
            if self.drop is not None and self.drop(direction, seg, idx):
                continue
            if self.wire:
                src, dst = (IP_A, IP_B) if direction == "ab" else (IP_B, IP_A)
                seg = parse_tcp(build_tcp(seg, src, dst), src, dst)
            else:
                seg = copy_segment(seg)
            t = self.now
            if self.bandwidth:
                t = max(t, self._link_free[direction]) + (len(seg.payload) + 52) / self.bandwidth
                self._link_free[direction] = t
            heapq.heappush(self._queue, (t + self.delay, next(self._seq), direction, seg))

    def _pump(self) -> None:
        for app, direction in ((self.a, "ab"), (self.b, "ba")):
            if app.conn is None:
                continue
            app.act(self.now)
            self._transmit(direction, app.conn.output(self.now))
            app.act(self.now)

    def _deliver(self, direction: str, seg: TcpSegment) -> None:
        if direction == "ab":
            if self.b.conn is None:
                if seg.flags == 0x02:  # a SYN reaches the "listener"
                    self.b.conn = TcpConnection.accept_syn(
                        self.cfg_b, IP_B, PORT_B, IP_A, PORT_A, seg, self.iss_b, self.now
                    )
                return
            self.b.conn.on_segment(seg, self.now)
        else:
            assert self.a.conn is not None
            self.a.conn.on_segment(seg, self.now)

    def step(self) -> bool:
        """Advance to the next event, deliver it, let the apps react; False if all is quiet."""
        times = [self._queue[0][0]] if self._queue else []
        for app in (self.a, self.b):
            if app.conn is not None:
                d = app.conn.next_deadline()
                if d is not None:
                    times.append(d)
        if not times:
            return False
        self.now = max(self.now, min(times))
        while self._queue and self._queue[0][0] <= self.now:
            _, _, direction, seg = heapq.heappop(self._queue)
            self._deliver(direction, seg)
        for app in (self.a, self.b):
            conn = app.conn
            if conn is not None:
                d = conn.next_deadline()
                if d is not None and d <= self.now:
                    conn.on_timer(self.now)
        self._pump()
        return True

    def run(
        self, until: Callable[[], bool], max_time: float = 600.0, max_steps: int = 1_000_000
    ) -> bool:
        """Step until ``until()`` holds; False if time/steps ran out or all went quiet."""
        deadline = self.now + max_time
        self._pump()
        for _ in range(max_steps):
            if until():
                return True
            if self.now > deadline or not self.step():
                return until()
        return until()
