"""Bounded send buffer: bytes the application wrote that are not yet acknowledged.

Storage is a list of chunks. A large ``bytes`` write (or a memoryview of ``bytes``) is kept
as its own chunk without a copy; small writes are copied into a growable ``bytearray`` tail
chunk. ``view()`` returns a memoryview slice of one chunk whenever the range lies inside it
(the common case), so neither new data nor retransmissions are copied. A bytearray cannot be
resized while a view of it is exported; when that happens (``BufferError``) the buffer simply
starts a new tail chunk.
"""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["SendBuffer"]

# Writes at least this large and immutable are stored as-is (zero copy).
_ZERO_COPY_MIN = 4096
# The bytearray tail stops growing here; a new one is started.
_TAIL_MAX = 64 * 1024


class SendBuffer:
    """Byte stream from the application, addressed by offset from the first unacked byte."""

    __slots__ = (
        "capacity",
        "_chunks",
        "_starts",
        "_first",
        "_acked",
        "_end",
        "_tail_open",
        "_c_start",
        "_c_end",
        "_c_view",
    )

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: list[bytes | bytearray | memoryview] = []
        self._starts: list[int] = []  # absolute stream offset of each chunk's first byte
        self._first = 0  # index of the first live chunk
        self._acked = 0  # absolute stream offset of the first unacknowledged byte
        self._end = 0  # absolute stream offset after the last byte
        self._tail_open = False  # last chunk is our own bytearray that may grow
        # The last chunk view() used, if it can never change (not the growing tail): its
        # absolute range and a memoryview of it, so consecutive segments skip the search.
        self._c_start = 0
        self._c_end = 0
        self._c_view = memoryview(b"")

    def __len__(self) -> int:
        return self._end - self._acked

    @property
    def space(self) -> int:
        """Bytes ``append`` would accept now."""
        return self.capacity - (self._end - self._acked)

    def append(self, data: bytes | bytearray | memoryview) -> int:
        """Queue up to ``space`` bytes of ``data``; returns how many were accepted."""
        k = min(len(data), self.capacity - (self._end - self._acked))
        if k <= 0:
            return 0
        if k >= _ZERO_COPY_MIN:
            if isinstance(data, bytes):
                chunk = data if k == len(data) else memoryview(data)[:k]
            elif type(data) is memoryview and type(data.obj) is bytes:
                chunk = data if k == len(data) else data[:k]  # a view of immutable bytes
            else:
                chunk = bytes(memoryview(data)[:k])  # caller may mutate its buffer later
            self._new_chunk(chunk)
            self._tail_open = False
        else:
            piece = data if k == len(data) else memoryview(data)[:k]
            tail = self._chunks[-1] if self._tail_open else None
            if isinstance(tail, bytearray) and len(tail) + k <= _TAIL_MAX:
                try:
                    tail.extend(piece)
                except BufferError:
                    # A segment still holds a view of the tail: leave it alone.
                    self._new_chunk(bytearray(piece))
            else:
                self._new_chunk(bytearray(piece))
            self._tail_open = True
        self._end += k
        return k

    def _new_chunk(self, chunk: bytes | bytearray | memoryview) -> None:
        self._chunks.append(chunk)
        self._starts.append(self._end)

    def view(self, offset: int, length: int) -> memoryview | bytes:
        """``length`` bytes starting ``offset`` bytes after the first unacked byte.

        A memoryview into the buffer when the range sits in one chunk, else a joined copy.
        """
        a = self._acked + offset
        if offset < 0 or length < 0 or a + length > self._end:
            raise IndexError("send buffer range out of bounds")
        if length == 0:
            return b""
        if self._c_start <= a and a + length <= self._c_end:
            o = a - self._c_start
            return self._c_view[o : o + length]
        i = bisect_right(self._starts, a, self._first) - 1
        c = self._chunks[i]
        start = self._starts[i]
        o = a - start
        if o + length <= len(c):
            mv = memoryview(c)
            if not (self._tail_open and i == len(self._chunks) - 1):
                self._c_start = start
                self._c_end = start + len(mv)
                self._c_view = mv
            return mv[o : o + length]
        parts = []
        need = length
        while need > 0:
            c = self._chunks[i]
            mv = memoryview(c)[o : o + need]
            parts.append(mv)
            need -= len(mv)
            i += 1
            o = 0
        return b"".join(parts)

    def ack(self, n: int) -> None:
        """Free ``n`` acknowledged bytes from the front."""
        if n <= 0:
            return
        self._acked = min(self._acked + n, self._end)
        chunks = self._chunks
        starts = self._starts
        last = len(chunks) - 1
        first = self._first
        acked = self._acked
        while first <= last and starts[first] + len(chunks[first]) <= acked:
            chunks[first] = b""  # freed (the list is compacted below)
            first += 1
        if first > last:
            chunks.clear()
            starts.clear()
            first = 0
            self._tail_open = False
        elif first > 32 and first * 2 > len(chunks):
            del chunks[:first]
            del starts[:first]
            first = 0
        self._first = first
