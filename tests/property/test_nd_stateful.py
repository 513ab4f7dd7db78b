"""The neighbour cache (RFC 4861 7.3) under any sequence of events, as a hypothesis state
machine: solicitations, advertisements, lookups, confirmations and timers in any order and at
any time. Invariants: bounded (entries and held packets), states consistent with what an
entry holds, every held packet either sent once, dropped with a count, or still held, and no
entry stuck resolving or probing once its timers have run out."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from anp_async.proto import icmpv6, nd

ADDRS = [bytes.fromhex("fd00" + "00" * 13) + bytes([i]) for i in range(1, 7)]
MACS = [bytes([2, 0, 0, 0, 0, i]) for i in range(1, 4)]
MAX_ENTRIES = 4
HOLD = 3

addr = st.sampled_from(ADDRS)
mac = st.sampled_from(MACS)


class NeighborCacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cache = nd.NeighborCache(hold_per_ip=HOLD, max_entries=MAX_ENTRIES)
        self.now = 0.0
        self.next_packet = 0
        self.sent: list[int] = []
        self.lost: set[int] = set()  # given up with the address, or dropped from a full queue

    def _released(self, out: list[tuple[bytes, object]]) -> None:
        for m, p in out:
            assert m in MACS
            assert isinstance(p, int)
            self.sent.append(p)

    @rule(dt=st.floats(0, 10))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        solicits, failed = self.cache.poll(self.now)
        for s in solicits:
            assert s.target in ADDRS
        for ip, dropped in failed:
            assert self.cache.state(ip) is None
            self.lost.update(p for p in dropped if isinstance(p, int))

    @rule(ip=addr)
    def send(self, ip: bytes) -> None:
        if self.cache.lookup(ip, self.now) is not None:
            return
        p = self.next_packet
        self.next_packet += 1
        before = self._held()
        self.cache.resolve(ip, p, self.now)
        # the oldest held packet went (RFC 4861 7.2.2), or the table was full: counted
        self.lost.update((before | {p}) - self._held())

    def _held(self) -> set[object]:
        return {q for e in self.cache._n.values() for q in e.queue}

    @rule(ip=addr, m=mac)
    def solicitation(self, ip: bytes, m: bytes) -> None:
        self._released(self.cache.on_solicit(ip, m, self.now))

    @rule(ip=addr, m=st.one_of(st.none(), mac), solicited=st.booleans(), override=st.booleans())
    def advertisement(self, ip: bytes, m: bytes | None, solicited: bool, override: bool) -> None:
        flags = (nd.FLAG_SOLICITED if solicited else 0) | (nd.FLAG_OVERRIDE if override else 0)
        msg = nd.NdMessage(icmpv6.NEIGHBOR_ADVERT, target=ip, flags=flags, target_lladdr=m)
        self._released(self.cache.on_advert(msg, self.now))

    @rule(ip=addr)
    def confirm(self, ip: bytes) -> None:
        self.cache.confirm(ip, self.now)

    @invariant()
    def bounded_and_consistent(self) -> None:
        entries = self.cache.entries()
        assert len(entries) <= MAX_ENTRIES
        for _ip, (state, m) in entries.items():
            assert state in (nd.INCOMPLETE, nd.REACHABLE, nd.STALE, nd.DELAY, nd.PROBE)
            assert (m is None) == (state == nd.INCOMPLETE)
        for e in self.cache._n.values():
            assert len(e.queue) <= HOLD
            if e.state != nd.INCOMPLETE:
                assert not e.queue  # resolved entries hold nothing

    @invariant()
    def packets_accounted_for(self) -> None:
        assert len(self.sent) == len(set(self.sent))  # none sent twice
        held = {p for e in self.cache._n.values() for p in e.queue}
        everyone = set(self.sent) | self.lost | held
        assert everyone == set(range(self.next_packet))

    def teardown(self) -> None:
        # long after the last event: nothing is still resolving or probing
        self.cache.poll(self.now + 100.0)
        self.cache.poll(self.now + 200.0)
        self.cache.poll(self.now + 300.0)
        self.cache.poll(self.now + 400.0)
        for state, _m in self.cache.entries().values():
            assert state in (nd.REACHABLE, nd.STALE)
        assert self.cache.next_deadline() is None


NeighborCacheMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestNeighborCache = NeighborCacheMachine.TestCase
