"""Stateful property test of the TCP engine: two TcpConnections over a hostile network.

Hypothesis drives an active opener (``connect``) and a passive one (``accept_syn``) through a
simulated network that loses, reorders and duplicates segments, while time advances and the
applications write, read and half-close at random. Segments are serialised with
``build_tcp`` when they leave a connection and parsed with ``parse_tcp`` on delivery, as the
real glue does, so no connection ever sees another one's buffers.

Each application has its own write buffer, like an asyncio transport: ``write`` appends to it
and whatever ``send()`` accepts moves into the engine; ``write_eof`` calls ``shutdown()``
once that buffer is empty.

Invariants (checked after every step): what each side has read is a prefix of what the other
side handed to ``send()`` (in order, nothing duplicated or invented), buffers stay within
their configured bounds, and no connection closes abnormally. At teardown the network turns
loss-free and runs to quiescence: both sides close, every byte arrives, both reach
TIME_WAIT/CLOSED with ``Closed("normal")`` exactly once, and after 2*MSL both are CLOSED.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from anp_async.proto.errors import ParseError
from anp_async.proto.tcp.config import TcpConfig
from anp_async.proto.tcp.connection import TcpConnection
from anp_async.proto.tcp.events import Closed, Connected, DataReceived, EofReceived
from anp_async.proto.tcp.segment import ACK, RST, SYN, build_tcp, parse_tcp

IP_A = bytes([10, 0, 0, 1])
IP_B = bytes([10, 0, 0, 2])
PORT_A = 40000
PORT_B = 8080
MSL = 5.0  # TIME_WAIT = 10 s of simulated time, longer than any backed-off RTO below
MAX_TIMER_STEPS = 20_000  # bound on timer firings while advancing time
MAX_SETTLE_ROUNDS = 5_000  # bound on the teardown loop
FINAL_STATES = {"CLOSED", "TIME_WAIT"}


def state_name(conn: TcpConnection) -> str:
    """The connection state as an upper-case name."""
    state = conn.state
    return str(getattr(state, "name", state)).upper()


def bucket(n: int) -> str:
    """A coarse size class for Hypothesis statistics."""
    for limit in (0, 1000, 10_000, 100_000):
        if n <= limit:
            return f"<={limit}"
    return ">100000"


class Side:
    """One endpoint: its connection plus what its application wrote and read."""

    def __init__(self, name: str, ip: bytes, seed: int) -> None:
        self.name = name
        self.ip = ip
        self.conn: TcpConnection | None = None
        self.rng = random.Random(seed)  # payload bytes: random, so a misplaced byte shows
        self.pending = bytearray()  # the application's write buffer, not yet in the engine
        self.sent = bytearray()  # bytes the engine accepted from send()
        self.received = bytearray()  # bytes the application read with recv()
        self.want_eof = False  # the application asked for write_eof
        self.shut = False  # shutdown() was called on the engine
        self.connected = 0
        self.eof = 0
        self.closed: list[str] = []

    def take_events(self) -> None:
        assert self.conn is not None
        for ev in self.conn.take_events():
            if isinstance(ev, Connected):
                self.connected += 1
            elif isinstance(ev, EofReceived):
                self.eof += 1
            elif isinstance(ev, Closed):
                self.closed.append(ev.reason)
            elif isinstance(ev, DataReceived):
                assert ev.n > 0

    def pump(self, now: float) -> None:
        """Move the application's buffer into the engine; write_eof once it is empty."""
        conn = self.conn
        if conn is None or not self.connected or self.shut:
            return
        if self.pending:
            n = conn.send(bytes(self.pending), now)
            assert 0 <= n <= len(self.pending)
            self.sent += self.pending[:n]
            del self.pending[:n]
        if self.want_eof and not self.pending:
            self.shut = True
            conn.shutdown(now)


class TcpPairMachine(RuleBasedStateMachine):
    """Two engines joined by a lossy, reordering, duplicating network under Hypothesis."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.a = Side("A", IP_A, seed=1)
        self.b = Side("B", IP_B, seed=2)
        # Segments in flight: (destination side, source ip, destination ip, wire bytes).
        self.net: list[tuple[Side, bytes, bytes, bytes]] = []
        self.cfg: TcpConfig | None = None
        self.iss_b = 0
        self.delivered = 0

    # -- plumbing ------------------------------------------------------------------------

    def peer(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def flush(self, side: Side) -> None:
        """Let the application act, then collect what ``side`` transmits now."""
        if side.conn is None:
            return
        dst = self.peer(side)
        for _ in range(4):  # Connected / SendSpace can let the application send more
            side.take_events()
            side.pump(self.now)
            segs = side.conn.output(self.now)
            if not segs:
                break
            for seg in segs:
                self.net.append((dst, side.ip, dst.ip, bytes(build_tcp(seg, side.ip, dst.ip))))
        side.take_events()

    def deliver(self, index: int) -> None:
        dst, src_ip, dst_ip, wire = self.net.pop(index)
        try:
            seg = parse_tcp(wire, src_ip, dst_ip)
        except ParseError as exc:  # our own segments must always parse
            raise AssertionError(f"engine emitted an unparsable segment: {exc}") from exc
        self.delivered += 1
        if dst.conn is None:
            # The listener: a SYN creates the passive connection; anything else is dropped
            # (a real listener would answer with RST, which this test never wants to see).
            if seg.has(SYN) and not seg.has(ACK) and not seg.has(RST):
                assert self.cfg is not None
                dst.conn = TcpConnection.accept_syn(
                    self.cfg, IP_B, PORT_B, IP_A, PORT_A, seg, self.iss_b, self.now
                )
                self.flush(dst)
            return
        if state_name(dst.conn) == "CLOSED":
            return  # the TCB is gone; the glue would not hand it segments any more
        dst.conn.on_segment(seg, self.now)
        self.flush(dst)

    def run_timers_until(self, target: float) -> None:
        """Advance time to ``target``, firing every deadline on the way in order."""
        for _ in range(MAX_TIMER_STEPS):
            due: list[tuple[float, Side]] = []
            for side in (self.a, self.b):
                if side.conn is not None:
                    d = side.conn.next_deadline()
                    if d is not None and d <= target:
                        due.append((d, side))
            if not due:
                break
            d, side = min(due, key=lambda x: x[0])
            self.now = max(self.now, d)
            assert side.conn is not None
            side.conn.on_timer(self.now)
            self.flush(side)
        else:
            raise AssertionError("timers kept firing without time moving on")
        self.now = max(self.now, target)

    # -- setup ---------------------------------------------------------------------------

    @initialize(
        mss=st.sampled_from([64, 200, 536, 1460]),
        send_buffer=st.sampled_from([1024, 4096, 65536]),
        recv_buffer=st.sampled_from([1024, 3000, 65536]),
        nodelay=st.booleans(),
        options=st.booleans(),
        congestion=st.sampled_from(["newreno", "cubic"]),
        iss_a=st.sampled_from([0, 1000, 2**32 - 700, 2**31 + 5]),
        iss_b=st.sampled_from([7, 2**32 - 1, 123456789]),
        preload_a=st.integers(min_value=0, max_value=40_000),
        preload_b=st.integers(min_value=0, max_value=20_000),
    )
    def setup(
        self,
        mss: int,
        send_buffer: int,
        recv_buffer: int,
        nodelay: bool,
        options: bool,
        congestion: str,
        iss_a: int,
        iss_b: int,
        preload_a: int,
        preload_b: int,
    ) -> None:
        self.cfg = TcpConfig(
            mss=mss,
            send_buffer=send_buffer,
            recv_buffer=recv_buffer,
            window_scale=options,
            sack=options,
            timestamps=options,
            nodelay=nodelay,
            delayed_ack=0.02,
            rto_initial=0.3,
            rto_min=0.05,
            rto_max=1.0,
            # A blackout here is only a run of steps without delivery (at most ~40 steps of
            # 2 s with RTO <= 1 s): it must never exhaust the retries, a real timeout would
            # then be the correct outcome.
            syn_retries=10_000,
            max_retries=10_000,
            msl=MSL,
            congestion=congestion,
        )
        self.iss_b = iss_b
        # Data the applications want to send from the start (handed over once connected).
        self.a.pending += self.a.rng.randbytes(preload_a)
        self.b.pending += self.b.rng.randbytes(preload_b)
        self.a.conn = TcpConnection.connect(self.cfg, IP_A, PORT_A, IP_B, PORT_B, iss_a, self.now)
        self.flush(self.a)

    # -- the applications ----------------------------------------------------------------

    @precondition(lambda self: not (self.a.want_eof and self.b.want_eof))
    @rule(which=st.booleans(), size=st.integers(min_value=1, max_value=6000))
    def write(self, which: bool, size: int) -> None:
        side = self.a if which else self.b
        if side.want_eof:
            return
        side.pending += side.rng.randbytes(size)
        self.flush(side)

    @rule(which=st.booleans(), max_bytes=st.one_of(st.none(), st.integers(1, 5000)))
    def read(self, which: bool, max_bytes: int | None) -> None:
        side = self.a if which else self.b
        if side.conn is None:
            return
        data = side.conn.recv(max_bytes)
        if max_bytes is not None:
            assert len(data) <= max_bytes
        side.received += data
        self.flush(side)

    @rule(which=st.booleans())
    def write_eof(self, which: bool) -> None:
        side = self.a if which else self.b
        side.want_eof = True
        self.flush(side)

    # -- the network ---------------------------------------------------------------------

    @precondition(lambda self: bool(self.net))
    @rule(pick=st.integers(min_value=0, max_value=10**6))
    def deliver_one(self, pick: int) -> None:
        """Deliver any in-flight segment (an index other than 0 reorders)."""
        self.deliver(pick % len(self.net))

    @precondition(lambda self: bool(self.net))
    @rule(rounds=st.integers(min_value=1, max_value=8))
    def deliver_in_order(self, rounds: int) -> None:
        """Deliver what is in flight in order, including the replies, ``rounds`` times."""
        for _ in range(rounds):
            for _ in range(len(self.net)):
                if not self.net:
                    break
                self.deliver(0)

    @precondition(lambda self: bool(self.net))
    @rule(pick=st.integers(min_value=0, max_value=10**6))
    def lose(self, pick: int) -> None:
        self.net.pop(pick % len(self.net))

    @precondition(lambda self: bool(self.net))
    @rule(pick=st.integers(min_value=0, max_value=10**6))
    def duplicate(self, pick: int) -> None:
        self.net.append(self.net[pick % len(self.net)])

    @rule(dt=st.sampled_from([0.001, 0.01, 0.03, 0.1, 0.5, 2.0]))
    def advance_time(self, dt: float) -> None:
        self.run_timers_until(self.now + dt)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def received_is_prefix_of_sent(self) -> None:
        for side in (self.a, self.b):
            other = self.peer(side)
            got = side.received
            assert bytes(other.sent[: len(got)]) == bytes(got), (
                f"{side.name} read bytes that {other.name} did not send at that offset "
                f"(read {len(got)}, sent {len(other.sent)})"
            )

    @invariant()
    def buffers_are_bounded(self) -> None:
        if self.cfg is None:
            return
        for side in (self.a, self.b):
            if side.conn is not None:
                assert side.conn.send_queued <= self.cfg.send_buffer
                assert side.conn.recv_available <= self.cfg.recv_buffer

    @invariant()
    def nothing_closes_abnormally(self) -> None:
        for side in (self.a, self.b):
            assert side.closed in ([], ["normal"]), f"{side.name} closed with {side.closed}"
            assert side.connected <= 1
            assert side.eof <= 1

    # -- the end -------------------------------------------------------------------------

    def drain_receive(self) -> None:
        for side in (self.a, self.b):
            if side.conn is not None:
                data = side.conn.recv(None)
                if data:
                    side.received += data
                self.flush(side)

    def settled(self) -> bool:
        return (
            not self.net
            and self.b.conn is not None
            and self.a.conn is not None
            and state_name(self.a.conn) in FINAL_STATES
            and state_name(self.b.conn) in FINAL_STATES
        )

    def teardown(self) -> None:
        if self.a.conn is None:
            return  # setup did not run (Hypothesis aborted the example early)
        # Loss off: both applications close; deliver everything in order, read everything,
        # let timers fire, until both ends are done.
        self.a.want_eof = self.b.want_eof = True
        for _ in range(MAX_SETTLE_ROUNDS):
            self.drain_receive()
            while self.net:
                self.deliver(0)
            self.drain_receive()
            if self.net:
                continue
            if self.settled():
                break
            deadlines = [
                d
                for side in (self.a, self.b)
                if side.conn is not None and (d := side.conn.next_deadline()) is not None
            ]
            assert deadlines, (
                f"stuck: A {state_name(self.a.conn)}, "
                f"B {state_name(self.b.conn) if self.b.conn else 'no TCB'}, nothing scheduled"
            )
            self.run_timers_until(min(deadlines))
        assert self.b.conn is not None, "the SYN never reached the listener"
        assert self.settled(), (
            f"not settled: A {state_name(self.a.conn)}, B {state_name(self.b.conn)}, "
            f"{len(self.net)} segments in flight"
        )
        self.received_is_prefix_of_sent()
        for side in (self.a, self.b):
            other = self.peer(side)
            assert not side.pending, f"{side.name} could not hand over {len(side.pending)} bytes"
            assert bytes(other.received) == bytes(side.sent), (
                f"{other.name} got {len(other.received)} of {len(side.sent)} bytes; "
                f"A {state_name(self.a.conn)}, B {state_name(self.b.conn)}"
            )
            assert side.connected == 1, f"{side.name} Connected x{side.connected}"
            assert side.eof == 1, f"{side.name} EofReceived x{side.eof}"
            assert side.closed == ["normal"], f"{side.name} Closed {side.closed}"
        event(f"bytes A->B: {bucket(len(self.a.sent))}, B->A: {bucket(len(self.b.sent))}")
        event(f"segments delivered: {bucket(self.delivered)}")
        # TIME_WAIT lasts 2*MSL, then the TCB is CLOSED.
        self.run_timers_until(self.now + 2 * MSL + 1.0)
        while self.net:
            self.deliver(0)
        for side in (self.a, self.b):
            assert side.conn is not None
            assert state_name(side.conn) == "CLOSED", (side.name, state_name(side.conn))
            assert side.closed == ["normal"]


TcpPairMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_tcp_pair = TcpPairMachine.TestCase
