"""The one counters type of the stack: named integer counters, like ``netstat -s``.

Every layer that drops a packet or takes a decision counts it in a :class:`Counters`;
``Stack.stats()`` copies them out. A counter nobody has incremented reads as 0.
Dependency-free, so every layer (``proto/`` included) may use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class Counters(dict[str, int]):
    """A dict of named counters that starts every name at zero.

    ``Counters.zeros(names)`` gives a set whose names are listed even while zero.
    """

    __slots__ = ()

    def __missing__(self, key: str) -> int:
        return 0

    @classmethod
    def zeros(cls, names: Iterable[str]) -> Counters:
        """Counters with these names listed at zero (``stats()`` shows them all)."""
        return cls(dict.fromkeys(names, 0))

    def inc(self, key: str, n: int = 1) -> None:
        """Add ``n`` (default 1) to ``key``."""
        self[key] += n  # __missing__ reads 0 for a new name

    def add(self, other: Mapping[str, int] | Iterable[tuple[str, int]], prefix: str = "") -> None:
        """Add every counter of ``other`` (a mapping or pairs), with ``prefix`` on its names."""
        items = other.items() if isinstance(other, Mapping) else other
        for k, v in items:
            key = prefix + k
            self[key] = self.get(key, 0) + v
