"""Out-of-order receive queue: holds segments beyond RCV.NXT until the gap fills.

Sequence numbers here are the connection's unbounded absolute numbers (no wrap-around).
Stored ranges never overlap, so overlapping or duplicate data is stored, and later delivered,
exactly once. The queue is bounded by segment count and, through ``limit`` (the right edge of
the advertised receive window), by bytes.
"""

from __future__ import annotations

import builtins  # the class has a property named bytes
from bisect import bisect_left

__all__ = ["Reassembler"]


class Reassembler:
    """Sorted, non-overlapping out-of-order ranges with their data and arrival order."""

    __slots__ = ("max_segments", "_starts", "items", "_stamp", "_bytes", "dropped", "dsack")
    # ``items`` (read-only for callers): (start, end, data, stamp) tuples in order; its
    # truthiness is the cheapest "anything held?" test on the receive fast path.

    def __init__(self, max_segments: int = 256) -> None:
        self.max_segments = max_segments
        self._starts: list[int] = []
        self.items: list[tuple[int, int, bytes, int]] = []  # (start, end, data, stamp)
        self._stamp = 0
        self._bytes = 0
        self.dropped = 0  # segments refused because the queue was full
        # RFC 2883: the duplicate range to report in the next ACK's first SACK block.
        self.dsack: tuple[int, int] | None = None

    def note_duplicate(self, start: int, end: int) -> None:
        """RFC 2883 (4): ``[start, end)`` arrived again; the next ACK reports it first
        (only the latest duplicate is reported, as Linux does)."""
        if start < end:
            self.dsack = (start, end)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    @property
    def bytes(self) -> int:
        """Bytes currently held."""
        return self._bytes

    def add(
        self, start: int, data: builtins.bytes | memoryview, rcv_nxt: int, limit: int
    ) -> bool:
        """Store the new parts of ``data`` (at ``start``) that lie in [rcv_nxt, limit).

        Returns True if any byte was new. Parts already held are not stored twice.
        """
        s = max(start, rcv_nxt)
        e = min(start + len(data), limit)
        self._stamp += 1
        if s >= e:
            return False
        starts = self._starts
        items = self.items
        i = bisect_left(starts, s)
        if i > 0 and items[i - 1][1] > s:
            i -= 1
        pieces: list[tuple[int, int]] = []
        cur = s
        j = i
        dup: tuple[int, int] | None = None
        while j < len(items) and cur < e:
            a, b = items[j][0], items[j][1]
            if a >= e:
                break
            if a > cur:
                pieces.append((cur, a))
            if dup is None and b > cur:
                # RFC 2883 (4.2): the first part already held is the duplicate reported.
                dup = (a if a > cur else cur, b if b < e else e)
            cur = max(cur, b)
            j += 1
        if dup is not None:
            self.dsack = dup
        if cur < e:
            pieces.append((cur, e))
        if not pieces:
            # A pure duplicate still counts as the most recent arrival for SACK ordering.
            self._touch(s, e)
            return False
        if len(items) + len(pieces) > self.max_segments:
            self.dropped += 1
            return False
        mv = memoryview(data)
        stamp = self._stamp
        for a, b in pieces:
            k = bisect_left(starts, a)
            starts.insert(k, a)
            items.insert(k, (a, b, bytes(mv[a - start : b - start]), stamp))
            self._bytes += b - a
        self._touch(s, e)
        return True

    def _touch(self, s: int, e: int) -> None:
        items = self.items
        stamp = self._stamp
        for k in range(bisect_left(self._starts, s) - 1, len(items)):
            if k < 0:
                continue
            a, b, d, _ = items[k]
            if a >= e:
                break
            if b > s:
                items[k] = (a, b, d, stamp)

    def pop_ready(self, rcv_nxt: int) -> list[builtins.bytes | memoryview]:
        """Remove and return the data that continues the stream at ``rcv_nxt`` (in order)."""
        out: list[bytes | memoryview] = []
        items = self.items
        while items and items[0][0] <= rcv_nxt:
            a, b, d, _ = items.pop(0)
            self._starts.pop(0)
            self._bytes -= b - a
            if b > rcv_nxt:
                out.append(memoryview(d)[rcv_nxt - a :] if a < rcv_nxt else d)
                rcv_nxt = b
        return out

    def clear(self) -> None:
        """Drop everything."""
        self._starts.clear()
        self.items.clear()
        self._bytes = 0
        self.dsack = None

    def blocks(self) -> list[tuple[int, int, int]]:
        """Contiguous held ranges as (start, end, most recent arrival stamp), in order."""
        out: list[tuple[int, int, int]] = []
        for a, b, _, st in self.items:
            if out and out[-1][1] == a:
                la, _, lst = out[-1]
                out[-1] = (la, b, max(lst, st))
            else:
                out.append((a, b, st))
        return out

    def sack_blocks(self, max_blocks: int) -> list[tuple[int, int]]:
        """RFC 2018 (4): SACK blocks, the one holding the latest arrival first, then by recency.

        RFC 2883 (4): a pending D-SACK block goes first (and is reported once).
        """
        blocks = self.blocks()
        blocks.sort(key=lambda t: t[2], reverse=True)
        out = [(a, b) for a, b, _ in blocks]
        dsack = self.dsack
        if dsack is not None:
            self.dsack = None
            out.insert(0, dsack)
        return out[:max_blocks]
