"""Who holds a local port, per address family: TCP listeners and UDP endpoints.

Linux lets an AF_INET socket and an IPV6_V6ONLY AF_INET6 socket hold the same port (a
dual-stack server's two sockets), while an AF_INET6 socket that hears both families
clashes with either (EADDRINUSE). :class:`FamilyPorts` keeps one table per family: an
item that hears both is in both, and a packet is looked up in its own family's table.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class FamilyPorts(Generic[T]):
    """Items (listeners, endpoints) by port, one table for IPv4 and one for IPv6."""

    __slots__ = ("_v4", "_v6")

    def __init__(self) -> None:
        self._v4: dict[int, T] = {}
        self._v6: dict[int, T] = {}

    def conflict(self, port: int, *, v4: bool = True, v6: bool = True) -> bool:
        """Would an item hearing these families clash with one on ``port``?"""
        return (v4 and port in self._v4) or (v6 and port in self._v6)

    def add(self, port: int, item: T, *, v4: bool = True, v6: bool = True) -> None:
        """Hold ``port`` for ``item`` in the families it hears (check :meth:`conflict`)."""
        if v4:
            self._v4[port] = item
        if v6:
            self._v6[port] = item

    def remove(self, port: int, item: T) -> None:
        """Release ``port`` wherever ``item`` holds it."""
        for table in (self._v4, self._v6):
            if table.get(port) is item:
                del table[port]

    def get(self, port: int, v6: bool) -> T | None:
        """The item a packet of that family to ``port`` reaches."""
        return (self._v6 if v6 else self._v4).get(port)

    def held(self, port: int) -> bool:
        """Does an item of either family hold ``port``?"""
        return port in self._v4 or port in self._v6

    def items(self) -> list[tuple[int, T]]:
        """Every (port, item), an item of both families once."""
        return [(port, item) for port, item, _, _ in self.entries()]

    def entries(self) -> list[tuple[int, T, bool, bool]]:
        """Every (port, item, hears IPv4, hears IPv6), an item of both families once."""
        v6 = self._v6
        out = [(p, it, True, v6.get(p) is it) for p, it in self._v4.items()]
        out += [(p, it, False, True) for p, it in v6.items() if self._v4.get(p) is not it]
        return out
