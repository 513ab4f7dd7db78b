"""Who holds a local port, per address family: TCP listeners and UDP endpoints.

Linux lets an AF_INET socket and an IPV6_V6ONLY AF_INET6 socket hold the same port (a
dual-stack server's two sockets), while an AF_INET6 socket that hears both families
clashes with either (EADDRINUSE). :class:`FamilyPorts` keeps one table per family: an
item that hears both is in both, and a packet is looked up in its own family's table.

Several UDP sockets may also share a port in one family when every one of them set
SO_REUSEADDR (iperf3's UDP server binds a fresh socket on the port it just connected). A
datagram then reaches the socket connected to its source, else the most recently bound
unconnected one: Linux's UDP lookup scores a connected socket higher, and among equals
takes the newest.

TCP listeners share a port when every one of them set SO_REUSEPORT (a group of worker
processes, each with its own listening socket): a SYN reaches the one its flow's hash
picks (:meth:`FamilyPorts.pick`), so a flow's every segment reaches the same listener,
as Linux's reuseport group selects by the 4-tuple's hash. Unconnected UDP sockets with
SO_REUSEPORT are such a group too: a datagram no connected socket takes goes to the
member its flow's hash picks.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar, cast

T = TypeVar("T")

#: (item, it agreed to share the port) in binding order, the newest last.
_Holders = list[tuple[T, bool]]


def _flow_hash(src: tuple[bytes, int]) -> int:
    """A flow's hash from its source (address, port): the same for all its packets."""
    return zlib.crc32(src[0], src[1])


class FamilyPorts(Generic[T]):
    """Items (listeners, endpoints) by port, one table for IPv4 and one for IPv6."""

    __slots__ = ("_v4", "_v6")

    def __init__(self) -> None:
        self._v4: dict[int, _Holders[T]] = {}
        self._v6: dict[int, _Holders[T]] = {}

    def conflict(self, port: int, *, v4: bool = True, v6: bool = True, share: bool = False) -> bool:
        """Would an item hearing these families clash with one on ``port``? With
        ``share`` (SO_REUSEADDR) it joins holders that all agreed to share."""
        for table, hears in ((self._v4, v4), (self._v6, v6)):
            holders = table.get(port) if hears else None
            if holders and not (share and all(shared for _, shared in holders)):
                return True
        return False

    def add(
        self, port: int, item: T, *, v4: bool = True, v6: bool = True, share: bool = False
    ) -> None:
        """Hold ``port`` for ``item`` in the families it hears (check :meth:`conflict`)."""
        for table, hears in ((self._v4, v4), (self._v6, v6)):
            if hears:
                table.setdefault(port, []).append((item, share))

    def remove(self, port: int, item: T) -> None:
        """Release ``port`` wherever ``item`` holds it."""
        for table in (self._v4, self._v6):
            holders = table.get(port)
            if holders is None:
                continue
            holders[:] = [h for h in holders if h[0] is not item]
            if not holders:
                del table[port]

    def get(
        self,
        port: int,
        v6: bool,
        src: Hashable = None,
        remote_of: Callable[[T], Hashable | None] | None = None,
        *,
        flow: int | None = None,
        in_group: Callable[[T], bool] | None = None,
    ) -> T | None:
        """The item a packet of that family to ``port`` reaches. With ``remote_of(item)``
        (the peer an item is connected to, None if none): the one connected to ``src``,
        else the newest unconnected one -- or, when that one is in a group
        (``in_group``: SO_REUSEPORT), the unconnected group member the flow's hash picks
        (``flow``, else the hash of ``src``, an (address, port), taken only then); never
        one connected to another peer (None when only such hold the port: Linux answers
        as for a closed port)."""
        holders = (self._v6 if v6 else self._v4).get(port)
        if not holders:
            return None
        if remote_of is None:
            return holders[-1][0]
        unconnected: list[T] = []
        for item, _ in holders:
            remote = remote_of(item)
            if remote is None:
                unconnected.append(item)  # (binding order: the newest last)
            elif remote == src:
                return item
        if not unconnected:
            return None
        newest = unconnected[-1]
        if in_group is None or not in_group(newest):
            return newest
        group = [item for item in unconnected if in_group(item)]
        if len(group) == 1:
            return group[0]
        if flow is None:
            flow = _flow_hash(cast("tuple[bytes, int]", src))
        return group[flow % len(group)]

    def pick(
        self, port: int, v6: bool, flow: int | None = None, *, src: tuple[bytes, int] | None = None
    ) -> T | None:
        """The item a packet of that family to ``port`` reaches when the holders share
        it as a group: the one the flow's hash picks (``flow``, non-negative, else the
        hash of ``src``, taken only when there is more than one), the same one for every
        packet of the flow while the group stays."""
        holders = (self._v6 if v6 else self._v4).get(port)
        if not holders:
            return None
        if len(holders) == 1:
            return holders[0][0]
        if flow is None:
            flow = _flow_hash(src) if src is not None else 0
        return holders[flow % len(holders)][0]

    def held(self, port: int) -> bool:
        """Does an item of either family hold ``port``?"""
        return port in self._v4 or port in self._v6

    def items(self) -> list[tuple[int, T]]:
        """Every (port, item), an item of both families once."""
        return [(port, item) for port, item, _, _ in self.entries()]

    def entries(self) -> list[tuple[int, T, bool, bool]]:
        """Every (port, item, hears IPv4, hears IPv6), an item of both families once."""
        out: list[tuple[int, T, bool, bool]] = []
        for port, holders in self._v4.items():
            v6 = [it for it, _ in self._v6.get(port, ())]
            out += [(port, it, True, any(x is it for x in v6)) for it, _ in holders]
        for port, holders in self._v6.items():
            v4 = [it for it, _ in self._v4.get(port, ())]
            out += [(port, it, False, True) for it, _ in holders if not any(x is it for x in v4)]
        return out


def pick_free(
    ports: FamilyPorts[T],
    candidates: range,
    ok: Callable[[int], bool],
    choice: Callable[[range], int],
) -> int | None:
    """A number of ``candidates`` (ports, echo identifiers) that no item holds and ``ok``
    accepts: 64 draws with ``choice`` (the caller's randomness), then a scan in order;
    None when there is none."""
    for _ in range(64):
        n = choice(candidates)
        if not ports.held(n) and ok(n):
            return n
    for n in candidates:
        if not ports.held(n) and ok(n):
            return n
    return None
