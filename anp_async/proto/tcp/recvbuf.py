"""The receive buffer: in-order bytes waiting for the application.

It keeps the chunks as they arrived -- views of the received frames, not a copy -- and
hands them out with one copy: a single chunk that is already ``bytes`` leaves as it is,
several are joined once. Appending to a ``bytearray`` and slicing it (the obvious
buffer) copies every byte twice before the application sees it, which is half the
receive path's work for bulk data from a GRO'd super-segment. A reader that copies
anyway (asyncio's ``StreamReader`` appends to a ``bytearray``; a ``BufferedProtocol``
fills its own buffer) takes the chunks themselves with ``take_views``: no copy here at all.

A chunk must not change after it is appended: a view of immutable ``bytes`` (what a NIC
read returns) is kept as is, anything else (a view of a ``bytearray`` a caller may reuse)
is copied on the way in.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RecvBuffer"]


class RecvBuffer:
    """A FIFO of byte chunks with a byte length; ``take`` copies once."""

    __slots__ = ("_chunks", "_len")

    def __init__(self) -> None:
        self._chunks: deque[bytes | memoryview] = deque()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (kept by reference when it is immutable ``bytes`` or a view of it)."""
        n = len(data)
        if not n:
            return
        if type(data) is memoryview:
            if type(data.obj) is not bytes:
                data = bytes(data)
        elif type(data) is not bytes:
            data = bytes(data)
        self._chunks.append(data)
        self._len += n

    def take(self, max_bytes: int | None = None) -> bytes:
        """Remove and return up to ``max_bytes`` (all if None) from the front."""
        n = self._len if max_bytes is None or max_bytes > self._len else max(0, max_bytes)
        if n == 0:
            return b""
        chunks = self._chunks
        if n == self._len:
            self._len = 0
            if len(chunks) == 1:
                c = chunks.popleft()
                return c if type(c) is bytes else bytes(c)
            data = b"".join(chunks)
            chunks.clear()
            return data
        parts = self._front(n)
        if len(parts) == 1:
            p = parts[0]
            return p if type(p) is bytes else bytes(p)
        return b"".join(parts)

    def take_views(self, max_bytes: int | None = None) -> list[bytes | memoryview]:
        """Remove up to ``max_bytes`` (all if None) from the front and return them as the
        chunks they are (read-only views of received frames, or ``bytes``), not copied.

        The views stay valid as long as the caller keeps them: they hold their frame."""
        chunks = self._chunks
        if max_bytes is None or max_bytes >= self._len:
            out = list(chunks)
            chunks.clear()
            self._len = 0
            return out
        return self._front(max(0, max_bytes))

    def _front(self, n: int) -> list[bytes | memoryview]:
        """Remove the first ``n`` (< len) bytes as chunks, splitting the last one by view."""
        chunks = self._chunks
        self._len -= n
        out: list[bytes | memoryview] = []
        while n:
            c = chunks[0]
            k = len(c)
            if k <= n:
                out.append(chunks.popleft())
                n -= k
            else:
                view = c if type(c) is memoryview else memoryview(c)
                out.append(view[:n])
                chunks[0] = view[n:]
                n = 0
        return out

    def clear(self) -> None:
        """Drop everything."""
        self._chunks.clear()
        self._len = 0
