"""Neighbor Discovery for IPv6 (RFC 4861) and Duplicate Address Detection (RFC 4862).

Sans-I/O like :mod:`arp`: messages are parsed from and built into ICMPv6 bodies, and
:class:`NeighborCache`, :class:`DadTable` and :class:`RouterList` take parsed messages,
packets waiting for an address and the time, and say what to send. The stack wraps the
messages in ICMPv6 and IPv6 (hop limit 255) and Ethernet.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass, field

from anp_async.counters import Counters
from anp_async.proto.checksum import Buffer
from anp_async.proto.errors import ParseError

from .icmpv6 import (
    NEIGHBOR_ADVERT,
    NEIGHBOR_SOLICIT,
    REDIRECT,
    ROUTER_ADVERT,
    ROUTER_SOLICIT,
    Icmpv6Message,
)
from .ipv6 import ANY, is_multicast, multicast_mac, solicited_node

# Option types (RFC 4861 (4.6))
OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
OPT_PREFIX_INFO = 3
OPT_REDIRECTED = 4
OPT_MTU = 5

# NA flags in the word after the checksum (RFC 4861 (4.4))
FLAG_ROUTER = 0x80000000
FLAG_SOLICITED = 0x40000000
FLAG_OVERRIDE = 0x20000000

# Host constants (RFC 4861 (10))
MAX_RTR_SOLICITATIONS = 3
RTR_SOLICITATION_INTERVAL = 4.0
MAX_MULTICAST_SOLICIT = 3
MAX_UNICAST_SOLICIT = 3
REACHABLE_TIME = 30.0
RETRANS_TIMER = 1.0
DELAY_FIRST_PROBE_TIME = 5.0

ND_HOP_LIMIT = 255  # RFC 4861 (7.1): proves the sender is on the link

# Neighbour cache states (RFC 4861 (7.3.2))
INCOMPLETE = "INCOMPLETE"
REACHABLE = "REACHABLE"
STALE = "STALE"
DELAY = "DELAY"
PROBE = "PROBE"

_PREFIX = struct.Struct("!BBIII16s")


@dataclass(slots=True)
class PrefixInfo:
    """A Prefix Information option (RFC 4861 (4.6.2)); lifetimes in seconds."""

    prefix: bytes
    prefix_len: int
    on_link: bool
    autonomous: bool
    valid_lifetime: int
    preferred_lifetime: int


@dataclass(slots=True)
class NdMessage:
    """A validated ND message: what the ND state machines need of it."""

    type: int
    target: bytes = ANY
    flags: int = 0
    source_lladdr: bytes | None = None
    target_lladdr: bytes | None = None
    # Router Advertisement fields (RFC 4861 (4.2)); times in seconds, 0 = unspecified
    cur_hop_limit: int = 0
    router_lifetime: int = 0
    reachable_time: float = 0.0
    retrans_timer: float = 0.0
    mtu: int = 0
    prefixes: list[PrefixInfo] = field(default_factory=list)

    @property
    def router(self) -> bool:
        return bool(self.flags & FLAG_ROUTER)

    @property
    def solicited(self) -> bool:
        return bool(self.flags & FLAG_SOLICITED)

    @property
    def override(self) -> bool:
        return bool(self.flags & FLAG_OVERRIDE)


def _options(buf: memoryview, msg: NdMessage) -> None:
    """Read the options after the fixed part (RFC 4861 (4.6)); unknown ones are skipped."""
    i = 0
    n = len(buf)
    while i < n:
        if i + 2 > n:
            raise ParseError("nd_bad_option", "truncated")
        kind, units = buf[i], buf[i + 1]
        # RFC 4861 (4.6): a length of zero makes the whole message invalid
        if units == 0:
            raise ParseError("nd_bad_option", "length 0")
        end = i + units * 8
        if end > n:
            raise ParseError("nd_bad_option", "beyond the message")
        if kind == OPT_SOURCE_LLADDR and units == 1:
            msg.source_lladdr = bytes(buf[i + 2 : i + 8])
        elif kind == OPT_TARGET_LLADDR and units == 1:
            msg.target_lladdr = bytes(buf[i + 2 : i + 8])
        elif kind == OPT_MTU and units == 1:
            msg.mtu = int.from_bytes(buf[i + 4 : i + 8], "big")
        elif kind == OPT_PREFIX_INFO and units == 4:
            plen, flags, valid, preferred, _res, prefix = _PREFIX.unpack_from(buf, i + 2)
            if plen <= 128:
                msg.prefixes.append(
                    PrefixInfo(
                        prefix, plen, bool(flags & 0x80), bool(flags & 0x40), valid, preferred
                    )
                )
        i = end


def parse_nd(icmp: Icmpv6Message, src: bytes, dst: bytes, hop_limit: int) -> NdMessage:
    """Validate an ND message (RFC 4861 (6.1), (7.1)) and read its fields.

    ``ParseError`` reasons: ``nd_bad_hop_limit``, ``nd_bad_code``, ``nd_truncated``,
    ``nd_bad_target``, ``nd_bad_source``, ``nd_bad_option``, ``nd_not_nd``.
    """
    # RFC 4861 (6.1.1, 6.1.2, 7.1.1, 7.1.2): hop limit 255 and code 0 for every type
    if hop_limit != ND_HOP_LIMIT:
        raise ParseError("nd_bad_hop_limit", str(hop_limit))
    if icmp.code != 0:
        raise ParseError("nd_bad_code", str(icmp.code))
    body = icmp.body
    t = icmp.type
    msg = NdMessage(t, flags=icmp.rest)
    if t == NEIGHBOR_SOLICIT or t == NEIGHBOR_ADVERT or t == REDIRECT:
        need = 32 if t == REDIRECT else 16
        if len(body) < need:
            raise ParseError("nd_truncated", f"{len(body)} bytes")
        msg.target = bytes(body[:16])
        _options(body[need:], msg)
        if t == REDIRECT:
            return msg
        if is_multicast(msg.target):
            raise ParseError("nd_bad_target", "multicast")
        if t == NEIGHBOR_SOLICIT and src == ANY:
            # RFC 4861 (7.1.1): a DAD probe goes to a solicited-node group, without SLLA
            if dst != solicited_node(msg.target) or msg.source_lladdr is not None:
                raise ParseError("nd_bad_source", "unspecified source")
        if t == NEIGHBOR_ADVERT and is_multicast(dst) and msg.solicited:
            raise ParseError("nd_bad_target", "solicited advert to multicast")
        return msg
    if t == ROUTER_SOLICIT:
        _options(body, msg)
        if src == ANY and msg.source_lladdr is not None:
            raise ParseError("nd_bad_source", "unspecified source with SLLA")
        return msg
    if t == ROUTER_ADVERT:
        # RFC 4861 (6.1.2): from a link-local address, 16 octets or more
        if not (src[0] == 0xFE and src[1] & 0xC0 == 0x80):
            raise ParseError("nd_bad_source", "router address not link-local")
        if len(body) < 8:
            raise ParseError("nd_truncated", f"{len(body)} bytes")
        msg.cur_hop_limit = icmp.rest >> 24
        msg.router_lifetime = icmp.rest & 0xFFFF
        msg.reachable_time = int.from_bytes(body[0:4], "big") / 1000.0
        msg.retrans_timer = int.from_bytes(body[4:8], "big") / 1000.0
        _options(body[8:], msg)
        return msg
    raise ParseError("nd_not_nd", str(t))


def _lladdr_option(kind: int, mac: bytes) -> bytes:
    return bytes([kind, 1]) + mac


def build_ns(target: bytes, my_mac: bytes | None) -> tuple[int, bytes]:
    """``(rest, body)`` of a Neighbor Solicitation; ``my_mac`` None for a DAD probe
    (RFC 4862 (5.4.2): sent from :: without a source link-layer address option)."""
    body = target + (_lladdr_option(OPT_SOURCE_LLADDR, my_mac) if my_mac else b"")
    return 0, body


def build_na(
    target: bytes, my_mac: bytes, *, solicited: bool, override: bool = True
) -> tuple[int, bytes]:
    """``(rest, body)`` of a Neighbor Advertisement with the target link-layer address."""
    flags = (FLAG_SOLICITED if solicited else 0) | (FLAG_OVERRIDE if override else 0)
    return flags, target + _lladdr_option(OPT_TARGET_LLADDR, my_mac)


def build_rs(my_mac: bytes | None) -> tuple[int, bytes]:
    """``(rest, body)`` of a Router Solicitation (RFC 4861 (4.1))."""
    return 0, _lladdr_option(OPT_SOURCE_LLADDR, my_mac) if my_mac else b""


@dataclass(slots=True)
class Solicit:
    """A Neighbor Solicitation to send: for ``target``, to ``dst_ip`` at ``dst_mac``."""

    target: bytes
    dst_ip: bytes
    dst_mac: bytes


@dataclass(slots=True)
class _Neighbor:
    state: str
    mac: bytes | None
    deadline: float  # REACHABLE: until; DELAY/PROBE/INCOMPLETE: next timer
    probes: int = 0
    queue: deque[object] = field(default_factory=deque)
    is_router: bool = False


class NeighborCache:
    """The neighbour cache of RFC 4861 (7.3): entries with their reachability states.

    INCOMPLETE (resolving, packets held) -> REACHABLE (confirmed) -> STALE (unconfirmed;
    used, then DELAY) -> PROBE (unicast solicitations) -> gone. Every structure is
    bounded: ``max_entries`` neighbours, ``hold_per_ip`` packets waiting per address.
    """

    def __init__(
        self,
        *,
        reachable_time: float = REACHABLE_TIME,
        retrans_timer: float = RETRANS_TIMER,
        hold_per_ip: int = 64,
        max_entries: int = 1024,
    ) -> None:
        self.reachable_time = reachable_time
        self.retrans_timer = retrans_timer
        self.hold_per_ip = hold_per_ip
        self.max_entries = max_entries
        self._n: dict[bytes, _Neighbor] = {}
        self.counters = Counters()

    def __len__(self) -> int:
        return len(self._n)

    def state(self, ip: bytes) -> str | None:
        """The entry's state, None if absent."""
        e = self._n.get(ip)
        return e.state if e else None

    def entries(self) -> dict[bytes, tuple[str, bytes | None]]:
        """Every entry: address -> (state, link-layer address)."""
        return {ip: (e.state, e.mac) for ip, e in self._n.items()}

    def _new(self, ip: bytes, entry: _Neighbor) -> None:
        if len(self._n) >= self.max_entries:
            # evict the oldest entry that is not resolving
            for old, e in self._n.items():
                if e.state != INCOMPLETE:
                    del self._n[old]
                    self.counters.inc("evicted")
                    break
            else:
                self.counters.inc("table_full")
                return
        self._n[ip] = entry

    def lookup(self, ip: bytes, now: float) -> bytes | None:
        """The link-layer address to send to ``ip`` now, or None if it must be resolved.

        Using a STALE entry starts the DELAY timer (RFC 4861 (7.3.3)).
        """
        if is_multicast(ip):
            return multicast_mac(ip)
        e = self._n.get(ip)
        if e is None or e.mac is None:
            return None
        if e.state == REACHABLE and now >= e.deadline:
            e.state = STALE  # RFC 4861 (7.3.3): ReachableTime passed without confirmation
        if e.state == STALE:
            e.state = DELAY
            e.deadline = now + DELAY_FIRST_PROBE_TIME
        return e.mac

    def resolve(self, ip: bytes, packet: object, now: float) -> list[Solicit]:
        """Hold ``packet`` until ``ip`` resolves; the solicitation to send, if it is new.

        RFC 4861 (7.2.2): the first solicitation goes to the solicited-node group.
        """
        e = self._n.get(ip)
        if e is None:
            e = _Neighbor(INCOMPLETE, None, now + self.retrans_timer, probes=1)
            self._new(ip, e)
            if ip not in self._n:
                return []
            e.queue.append(packet)
            self.counters.inc("solicits_sent")
            group = solicited_node(ip)
            return [Solicit(ip, group, multicast_mac(group))]
        if len(e.queue) >= self.hold_per_ip:
            e.queue.popleft()  # RFC 4861 (7.2.2): the oldest waiting packet goes
            self.counters.inc("hold_dropped")
        e.queue.append(packet)
        return []

    def _release(self, e: _Neighbor) -> list[tuple[bytes, object]]:
        assert e.mac is not None
        out = [(e.mac, p) for p in e.queue]
        e.queue.clear()
        return out

    def on_solicit(
        self, src: bytes, lladdr: bytes | None, now: float
    ) -> list[tuple[bytes, object]]:
        """A Neighbor Solicitation (or RS/Redirect) from ``src`` carried its link-layer
        address: RFC 4861 (7.2.3) creates or updates the entry as STALE."""
        if src == ANY or lladdr is None:
            return []
        e = self._n.get(src)
        if e is None:
            self._new(src, _Neighbor(STALE, lladdr, math.inf))
            return []
        if e.mac != lladdr:
            e.mac = lladdr
            e.state = STALE
            e.deadline = math.inf
        return self._release(e) if e.queue else []

    def on_advert(self, msg: NdMessage, now: float) -> list[tuple[bytes, object]]:
        """A Neighbor Advertisement: RFC 4861 (7.2.5). Returns held packets to send."""
        e = self._n.get(msg.target)
        if e is None:
            self.counters.inc("advert_unsolicited_ignored")  # no entry: nothing to do
            return []
        lladdr = msg.target_lladdr
        if e.state == INCOMPLETE:
            if lladdr is None:
                return []
            e.mac = lladdr
            e.is_router = msg.router
            if msg.solicited:
                e.state, e.deadline = REACHABLE, now + self.reachable_time
            else:
                e.state, e.deadline = STALE, math.inf
            e.probes = 0
            self.counters.inc("resolved")
            return self._release(e)
        different = lladdr is not None and lladdr != e.mac
        if not msg.override and different:
            if e.state == REACHABLE:
                e.state, e.deadline = STALE, math.inf
            return []
        if lladdr is not None:
            e.mac = lladdr
        if msg.solicited:
            e.state, e.deadline, e.probes = REACHABLE, now + self.reachable_time, 0
        elif different:
            e.state, e.deadline = STALE, math.inf
        e.is_router = msg.router
        return []

    def confirm(self, ip: bytes, now: float) -> None:
        """Forward progress seen by an upper layer (RFC 4861 (7.3.1)): the entry is REACHABLE."""
        e = self._n.get(ip)
        if e is not None and e.mac is not None:
            e.state, e.deadline, e.probes = REACHABLE, now + self.reachable_time, 0

    def poll(self, now: float) -> tuple[list[Solicit], list[tuple[bytes, list[object]]]]:
        """Run the timers: solicitations to send, and ``(ip, dropped packets)`` of
        addresses given up on (RFC 4861 (7.3.3): after the last probe, the entry goes)."""
        solicits: list[Solicit] = []
        failed: list[tuple[bytes, list[object]]] = []
        for ip, e in list(self._n.items()):
            if e.state in (REACHABLE, STALE) or now < e.deadline:
                continue
            if e.state == DELAY:
                e.state, e.probes = PROBE, 0
            if e.state == PROBE:
                if e.probes >= MAX_UNICAST_SOLICIT:
                    del self._n[ip]
                    self.counters.inc("probe_failed")
                    failed.append((ip, []))
                    continue
                assert e.mac is not None
                solicits.append(Solicit(ip, ip, e.mac))
            else:  # INCOMPLETE
                if e.probes >= MAX_MULTICAST_SOLICIT:
                    del self._n[ip]
                    self.counters.inc("resolve_failed")
                    failed.append((ip, list(e.queue)))
                    continue
                group = solicited_node(ip)
                solicits.append(Solicit(ip, group, multicast_mac(group)))
            e.probes += 1
            e.deadline = now + self.retrans_timer
            self.counters.inc("solicits_sent")
        return solicits, failed

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has work (REACHABLE expiry needs none: it is lazy)."""
        due = [e.deadline for e in self._n.values() if e.state not in (REACHABLE, STALE)]
        return min(due) if due else None


class DadTable:
    """Duplicate Address Detection for our own addresses (RFC 4862 (5.4)).

    A new address is tentative: it answers nothing and receives nothing while
    ``transmits`` probes go out ``retrans_timer`` apart; no answer by then and it is
    ours. A Neighbor Advertisement for it, or another node's probe for it, means a
    duplicate: the address is not used (RFC 4862 (5.4.5)).
    """

    def __init__(self, transmits: int = 1, retrans_timer: float = RETRANS_TIMER) -> None:
        self.transmits = transmits
        self.retrans_timer = retrans_timer
        self._tentative: dict[bytes, tuple[int, float]] = {}  # addr -> (probes left, next)
        self.preferred: set[bytes] = set()
        self.duplicates: set[bytes] = set()

    def add(self, addr: bytes, now: float) -> list[bytes]:
        """Start DAD on ``addr``; the targets to probe now (none with ``transmits`` 0)."""
        if self.transmits <= 0:
            self.preferred.add(addr)
            return []
        self._tentative[addr] = (self.transmits - 1, now + self.retrans_timer)
        return [addr]

    def is_tentative(self, addr: bytes) -> bool:
        return addr in self._tentative

    def on_conflict(self, addr: bytes) -> bool:
        """An NA for ``addr`` or a DAD probe from another node: True if it was tentative
        (now a duplicate). An NA for a preferred address is a conflict too, reported but
        the address is kept (RFC 4862 (5.4.4) leaves it to the implementation)."""
        if addr in self._tentative:
            del self._tentative[addr]
            self.duplicates.add(addr)
            return True
        return False

    def poll(self, now: float) -> tuple[list[bytes], list[bytes]]:
        """``(targets to probe again, addresses now preferred)``."""
        probe: list[bytes] = []
        done: list[bytes] = []
        for addr, (left, when) in list(self._tentative.items()):
            if now < when:
                continue
            if left > 0:
                self._tentative[addr] = (left - 1, now + self.retrans_timer)
                probe.append(addr)
            else:
                del self._tentative[addr]
                self.preferred.add(addr)
                done.append(addr)
        return probe, done

    def next_deadline(self) -> float | None:
        if not self._tentative:
            return None
        return min(when for _, when in self._tentative.values())


@dataclass(slots=True)
class _Router:
    expires: float


class RouterList:
    """What a host learns from Router Advertisements (RFC 4861 (6.3.4)): default
    routers, on-link prefixes, the link MTU and timers; and the Router Solicitations it
    sends at start (RFC 4861 (6.3.7): at most MAX_RTR_SOLICITATIONS, 4 s apart)."""

    def __init__(self, link_mtu: int, max_solicits: int = MAX_RTR_SOLICITATIONS) -> None:
        self.link_mtu = link_mtu
        self.mtu = link_mtu
        self.routers: dict[bytes, _Router] = {}
        self.prefixes: dict[tuple[bytes, int], float] = {}  # on-link (prefix, len) -> expiry
        self.reachable_time = 0.0
        self.retrans_timer = 0.0
        self.hop_limit = 0
        self._solicits_left = max_solicits
        self._next_solicit: float | None = None

    def start(self, now: float) -> bool:
        """True if a Router Solicitation is to be sent now."""
        if self._solicits_left <= 0:
            return False
        self._solicits_left -= 1
        self._next_solicit = now + RTR_SOLICITATION_INTERVAL if self._solicits_left else None
        return True

    def poll(self, now: float) -> bool:
        """True if another Router Solicitation is due."""
        if self._next_solicit is None or now < self._next_solicit:
            return False
        return self.start(now)

    def next_deadline(self) -> float | None:
        return self._next_solicit

    def on_advert(self, src: bytes, msg: NdMessage, now: float) -> None:
        """Apply a validated Router Advertisement from ``src``."""
        self._next_solicit = None  # RFC 4861 (6.3.7): an advertisement ends the solicitations
        self._solicits_left = 0
        if msg.router_lifetime:
            self.routers[src] = _Router(now + msg.router_lifetime)
        else:
            self.routers.pop(src, None)  # RFC 4861 (6.3.4): lifetime 0 withdraws the router
        if msg.cur_hop_limit:
            self.hop_limit = msg.cur_hop_limit
        if msg.reachable_time:
            self.reachable_time = msg.reachable_time
        if msg.retrans_timer:
            self.retrans_timer = msg.retrans_timer
        # RFC 4861 (6.3.4): an MTU below the minimum or above the link's is ignored
        if 1280 <= msg.mtu <= self.link_mtu:
            self.mtu = msg.mtu
        for p in msg.prefixes:
            # RFC 4861 (6.3.4): the link-local prefix is ignored
            if not p.on_link or p.prefix[:2] == b"\xfe\x80":
                continue
            key = (_masked(p.prefix, p.prefix_len), p.prefix_len)
            if p.valid_lifetime == 0:
                self.prefixes.pop(key, None)
            else:
                life = math.inf if p.valid_lifetime == 0xFFFFFFFF else float(p.valid_lifetime)
                self.prefixes[key] = now + life

    def default_router(self, now: float) -> bytes | None:
        """A router whose lifetime has not run out, or None."""
        for addr, r in list(self.routers.items()):
            if r.expires > now:
                return addr
            del self.routers[addr]
        return None

    def on_link(self, ip: bytes, now: float) -> bool:
        """True if an advertised on-link prefix covers ``ip``."""
        for (prefix, plen), expires in self.prefixes.items():
            if expires > now and _masked(ip, plen) == prefix:
                return True
        return False


def _masked(ip: Buffer, plen: int) -> bytes:
    value = int.from_bytes(ip, "big")
    mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
    return (value & mask).to_bytes(16, "big")
