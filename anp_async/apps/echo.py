"""The course's reference application: a checked TCP echo, plus a plain UDP echo.

Wire format of one echo (client -> server, and the server sends the same bytes back)::

    +----------------------------+-----------------------------------------+
    | size: 8 bytes, big endian  | size bytes of the pattern (see below)   |
    +----------------------------+-----------------------------------------+

Byte ``i`` of the payload is ``PATTERN[i % 251]``: a fixed 251-byte block (prime length,
so it never lines up with power-of-two buffer or segment sizes and a shifted, dropped or
duplicated segment shows up as a mismatch). Both sides check it in chunks against a slice
of a precomputed block, never holding more than :data:`CHUNK` bytes of payload at once,
so any size (64 MiB and more) streams in constant memory.

Because the echo is byte-exact (header included), :func:`echo_client` also works against a
plain RFC 862 echo server (``socat``, :func:`plain_echo_handler`), and :func:`echo_handler`
works with any client that sends a header and the pattern.

Everything here is written against plain ``asyncio.StreamReader`` / ``StreamWriter`` and
``DatagramProtocol``: it runs unchanged on kernel sockets and on the stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

HEADER = struct.Struct("!Q")

#: Payload bytes read, checked and written per step.
CHUNK = 256 * 1024

#: Sizes above this are refused by the server (bounded work per connection).
MAX_SIZE = 1 << 32

#: The repeating block; any fixed 251-byte sequence with distinct neighbours works.
PATTERN = bytes((i * 7 + (i >> 3) + 1) & 0xFF for i in range(251))

# A block long enough that any CHUNK-sized slice starting at any phase fits in it.
_BLOCK = PATTERN * (CHUNK // len(PATTERN) + 2)


def expected(offset: int, length: int) -> bytes:
    """The pattern bytes at ``offset .. offset+length`` (``length <= CHUNK``)."""
    if length > CHUNK:
        raise ValueError("expected() serves at most CHUNK bytes at a time")
    start = offset % len(PATTERN)
    return _BLOCK[start : start + length]


def pattern_bytes(size: int) -> bytes:
    """The whole payload for ``size`` bytes (for tests and small sizes only)."""
    reps = size // len(PATTERN) + 1
    return (PATTERN * reps)[:size]


def first_mismatch(data: bytes, offset: int) -> int | None:
    """Offset of the first byte of ``data`` (at stream ``offset``) that breaks the pattern."""
    pos = 0
    while pos < len(data):
        n = min(CHUNK, len(data) - pos)
        want = expected(offset + pos, n)
        # bytes == bytes is a memcmp; a memoryview comparison is ~80x slower.
        got = data[pos : pos + n] if pos or n != len(data) else data
        if got != want:
            for i in range(n):
                if got[i] != want[i]:
                    return offset + pos + i
        pos += n
    return None


class EchoError(Exception):
    """An echo did not come back intact (the message says where and how)."""


async def _read_checked(reader: asyncio.StreamReader, size: int, what: str) -> None:
    """Read exactly ``size`` pattern bytes, checking each chunk; raise EchoError otherwise."""
    got = 0
    while got < size:
        data = await reader.read(min(CHUNK, size - got))
        if not data:
            raise EchoError(f"{what}: connection closed after {got} of {size} bytes")
        bad = first_mismatch(data, got)
        if bad is not None:
            raise EchoError(f"{what}: pattern mismatch at byte {bad} of {size}")
        got += len(data)


# -- server -------------------------------------------------------------------------------


@dataclass(slots=True)
class ServedEcho:
    """One echo the server handled."""

    peer: object
    size: int
    seconds: float
    ok: bool
    error: str | None = None


async def echo_handler(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    report: Callable[[ServedEcho], None] | None = None,
    max_size: int = MAX_SIZE,
) -> None:
    """Serve checked echoes on one connection until the client closes it.

    For each request: read the 8-byte size, then stream the payload in chunks, checking
    the pattern and writing each checked chunk back. On a bad size or a pattern mismatch
    the connection is closed at once, so the client sees a short echo. ``report`` (if
    given) is called once per request with the outcome.
    """
    peer = writer.get_extra_info("peername")
    try:
        while True:
            try:
                head = await reader.readexactly(HEADER.size)
            except asyncio.IncompleteReadError:
                return  # the client closed between requests (or sent half a header)
            (size,) = HEADER.unpack(head)
            t0 = time.perf_counter()
            if size > max_size:
                if report:
                    report(ServedEcho(peer, size, 0.0, False, f"size {size} > {max_size}"))
                return
            writer.write(head)
            got = 0
            error = None
            while got < size:
                data = await reader.read(min(CHUNK, size - got))
                if not data:
                    error = f"connection closed after {got} of {size} bytes"
                    break
                bad = first_mismatch(data, got)
                if bad is not None:
                    error = f"pattern mismatch at byte {bad} of {size}"
                    break
                writer.write(data)
                await writer.drain()
                got += len(data)
            if error is None:
                await writer.drain()
            if report:
                report(ServedEcho(peer, size, time.perf_counter() - t0, error is None, error))
            if error is not None:
                return
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def plain_echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """RFC 862 echo: send back whatever arrives until the peer closes."""
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class UdpEchoProtocol(asyncio.DatagramProtocol):
    """RFC 862 echo over UDP: every datagram goes back to its sender."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.echoed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)
            self.echoed += 1

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for an earlier reply: nothing to do for an echo service


# -- client -------------------------------------------------------------------------------

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclass(slots=True)
class EchoResult:
    """One echo as the client saw it."""

    index: int
    size: int
    seconds: float
    ok: bool
    error: str | None = None

    @property
    def mb_per_s(self) -> float:
        """Payload megabytes (10**6) per second of round trip (send + echo back)."""
        return self.size / self.seconds / 1e6 if self.seconds > 0 else 0.0


async def _send_pattern(writer: asyncio.StreamWriter, size: int) -> None:
    writer.write(HEADER.pack(size))
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        writer.write(expected(sent, n))
        sent += n
        await writer.drain()


async def echo_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    """Send one patterned buffer of ``size`` bytes and check its echo; EchoError if not intact.

    Sending and checking run concurrently: the server echoes while it still reads, so a
    client that sent everything before reading would deadlock once both windows fill.
    """
    sender = asyncio.create_task(_send_pattern(writer, size))
    try:
        try:
            head = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError as e:
            raise EchoError(
                f"echo: connection closed after {len(e.partial)} header bytes"
            ) from None
        if HEADER.unpack(head)[0] != size:
            raise EchoError(f"echo: header announces {HEADER.unpack(head)[0]}, sent {size}")
        await _read_checked(reader, size, "echo")
        await sender  # re-raises a send failure
    finally:
        if not sender.done():
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender


async def echo_client(
    connect: Connect,
    size: int,
    count: int,
    report: Callable[[EchoResult], None] | None = None,
    timeout: float | None = None,
) -> list[EchoResult]:
    """Run ``count`` echoes of ``size`` bytes, each on a fresh connection from ``connect``.

    ``connect`` is e.g. ``lambda: asyncio.open_connection(host, port)`` or
    ``lambda: stack.open_connection(host, port)``. Failures (refused, reset, mismatch,
    ``timeout`` seconds per echo exceeded) are recorded in the result, not raised.
    """
    results: list[EchoResult] = []
    for i in range(1, count + 1):
        t0 = time.perf_counter()
        error: str | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await connect()
                await echo_once(reader, writer, size)
        except EchoError as e:
            error = str(e)
        except TimeoutError as e:
            error = f"timed out ({e})" if str(e) else f"timed out after {timeout} s"
        except (OSError, asyncio.IncompleteReadError) as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 5.0)
        res = EchoResult(i, size, time.perf_counter() - t0, error is None, error)
        results.append(res)
        if report:
            report(res)
    return results
