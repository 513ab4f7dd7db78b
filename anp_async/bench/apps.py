"""The asyncio applications the benchmark runs: the same code on the stack and on kernel sockets.

``net`` is either an :class:`anp_async.Stack` or :class:`KernelNet` (asyncio on kernel
sockets); both offer ``start_server``, ``open_connection`` and ``create_datagram_endpoint``
with asyncio's signatures, so the "asyncio on kernel sockets" baseline runs exactly the
code the stack runs.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .common import (
    BULK_BLOCK,
    BULK_HEADER,
    DATAGRAM_TIMEOUT,
    SEQ,
    BulkCheck,
    bulk_block,
    mark_warm,
    payload_source,
    request_offset,
)

#: Datagrams the livelock application may have queued before it drops (bounded).
SINK_QUEUE = 4096


class BenchError(Exception):
    """A peer saw something that makes the run invalid (echo mismatch, lost reply ...)."""


class KernelNet:
    """asyncio on kernel sockets, shaped like the stack's socket API."""

    async def start_server(self, cb: Any, host: str, port: int, **kw: Any) -> Any:
        return await asyncio.start_server(cb, host, port, reuse_address=True, **kw)

    async def open_connection(self, host: str, port: int, **kw: Any) -> Any:
        kw.pop("nodelay", None)  # asyncio sets TCP_NODELAY on every TCP socket already
        return await asyncio.open_connection(host, port, **kw)

    async def create_datagram_endpoint(self, factory: Any, **kw: Any) -> Any:
        return await asyncio.get_running_loop().create_datagram_endpoint(factory, **kw)

    async def ping(self, host: str, **kw: Any) -> float:
        raise BenchError("ICMP has no asyncio-on-kernel-sockets counterpart")


# ------------------------------------------------------------------------- servers


async def tcp_echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo every byte back until EOF."""
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def tcp_sink_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bulk receiver: read the seed header, then to EOF checking every byte
    (:class:`~anp_async.bench.common.BulkCheck`), then answer with a JSON result line.

    The result (bytes, whether all matched, seconds from first byte to EOF, this process's
    CPU seconds over the same span) travels back to the sender on the half-closed
    connection.
    """
    n = 0
    t0 = cpu0 = 0
    try:
        (seed,) = BULK_HEADER.unpack(await reader.readexactly(BULK_HEADER.size))
        check = BulkCheck(seed)
        while True:
            data = await reader.read(1 << 18)
            if not data:
                break
            if not n:
                t0, cpu0 = time.perf_counter_ns(), time.process_time_ns()
            n += len(data)
            check.update(data)
        t1, cpu1 = time.perf_counter_ns(), time.process_time_ns()
        res = {"bytes": n, "verified": check.ok, "wall_ns": t1 - t0, "cpu_ns": cpu1 - cpu0}
        writer.write(json.dumps(res).encode() + b"\n")
        await writer.drain()
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


class UdpEcho(asyncio.DatagramProtocol):
    """Send every datagram back to where it came from."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


class UdpSink(asyncio.DatagramProtocol):
    """The livelock application: protocol input queues, an application task consumes.

    ``datagram_received`` only queues (bounded, like a socket receive buffer; a full queue
    drops and counts); :meth:`consume` is the application, a separate task that must get
    CPU time to take datagrams off the queue. Delivered = consumed.

    ``work_us`` is the application's real work per datagram: it hashes the datagram over
    and over (BLAKE2b) until that many microseconds of CPU have passed, as a server that
    parses and answers requests would spend them. With it, the receive path and the
    application compete for the one CPU the event loop runs on, and the application
    gives the loop a turn after every ``slice_us`` of work (a scheduler's time slice), so
    a receive path that takes every turn it gets can starve it (``bench/hardirq.py``).
    """

    def __init__(self, work_us: int = 0, slice_us: int = 1000) -> None:
        self.work_us = work_us
        self.slice_us = slice_us
        self.queue: collections.deque[bytes] = collections.deque()
        self.wake = asyncio.Event()
        self.received = 0
        self.dropped = 0
        self.consumed = 0
        self.bad = 0
        #: The consuming task, once started (kept referenced so it is not collected).
        self.task: asyncio.Task[None] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1
        if len(self.queue) >= SINK_QUEUE:
            self.dropped += 1
            return
        self.queue.append(data)
        self.wake.set()

    async def consume(self) -> None:
        q = self.queue
        clock = time.thread_time_ns
        blake = hashlib.blake2b
        while True:
            await self.wake.wait()
            self.wake.clear()
            slice_end = clock() + self.slice_us * 1000
            while q:
                d = q.popleft()
                if len(d) < SEQ.size:
                    self.bad += 1
                if self.work_us:
                    end = clock() + self.work_us * 1000
                    h = d
                    while clock() < end:
                        h = blake(h).digest()
                self.consumed += 1
                if self.work_us and clock() >= slice_end:
                    # The end of a scheduler time slice: the receive path gets its turn.
                    await asyncio.sleep(0)
                    slice_end = clock() + self.slice_us * 1000

    def counters(self) -> dict[str, int]:
        return {
            "received": self.received,
            "dropped": self.dropped,
            "consumed": self.consumed,
            "bad": self.bad,
        }


async def start_servers(net: Any, host: str) -> tuple[list[Any], UdpSink]:
    """TCP echo (7), TCP sink (9), UDP echo (7) and the UDP sink (9) on ``net``."""
    loop = asyncio.get_running_loop()
    servers = [
        await net.start_server(tcp_echo_handler, host, 7),
        await net.start_server(tcp_sink_handler, host, 9),
    ]
    tr, _ = await net.create_datagram_endpoint(UdpEcho, local_addr=(host, 7))
    sink = UdpSink()
    tr2, _ = await net.create_datagram_endpoint(lambda: sink, local_addr=(host, 9))
    sink.task = loop.create_task(sink.consume())
    return servers + [tr, tr2], sink


# ------------------------------------------------------------------------- clients


async def _measure(
    count: int, warmup: int, time_limit: float, request: Callable[[int], Awaitable[int]]
) -> dict[str, Any]:
    """Run ``warmup + count`` requests; ``request(i)`` does one and returns its round trip
    in ns (or raises BenchError). Warm-up is excluded from the samples and the wall/CPU
    figures; past ``time_limit`` the phase stops and is marked truncated."""
    samples: list[int] = []
    deadline = time.monotonic() + time_limit
    truncated = False
    t0 = cpu0 = 0
    sys0 = 0.0
    for i in range(warmup + count):
        if i == warmup:
            mark_warm()
            t0, cpu0, sys0 = time.perf_counter_ns(), time.process_time_ns(), os.times().system
        rtt = await request(i)
        if i >= warmup:
            samples.append(rtt)
        if time.monotonic() > deadline:
            truncated = i + 1 < warmup + count
            break
    if count and not t0:
        raise BenchError("time limit reached during warm-up")
    t1, cpu1 = time.perf_counter_ns(), time.process_time_ns()
    return {
        "samples_ns": samples,
        "wall_ns": t1 - t0,
        "cpu_ns": cpu1 - cpu0,
        "sys_ns": int((os.times().system - sys0) * 1e9),
        "truncated": truncated,
    }


async def tcp_client(
    net: Any, host: str, size: int, count: int, warmup: int, seed: int, time_limit: float
) -> dict[str, Any]:
    """Request/response over one TCP connection; each echo checked byte for byte."""
    src = payload_source(seed, size)
    reader, writer = await net.open_connection(host, 7, nodelay=True, limit=max(2**16, 2 * size))

    async def request(i: int) -> int:
        off = request_offset(i, size)
        msg = src[off : off + size]
        a = time.perf_counter_ns()
        writer.write(msg)
        data = await reader.readexactly(size)
        b = time.perf_counter_ns()
        if data != msg:
            raise BenchError(f"tcp echo mismatch at request {i} (size {size})")
        return b - a

    try:
        return await _measure(count, warmup, time_limit, request)
    finally:
        writer.close()


class _DatagramClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(data)


async def udp_client(
    net: Any, host: str, size: int, count: int, warmup: int, seed: int, time_limit: float
) -> dict[str, Any]:
    """Request/response datagrams; a lost or wrong echo fails the run."""
    loop = asyncio.get_running_loop()
    src = payload_source(seed, size)
    tr, proto = await net.create_datagram_endpoint(_DatagramClient, remote_addr=(host, 7))

    async def request(i: int) -> int:
        off = request_offset(i, size)
        msg = src[off : off + size]
        fut = loop.create_future()
        proto.waiter = fut
        timer = loop.call_later(DATAGRAM_TIMEOUT, fut.cancel)
        a = time.perf_counter_ns()
        tr.sendto(msg)
        try:
            data = await fut
        except asyncio.CancelledError:
            raise BenchError(f"udp echo {i} (size {size}) lost") from None
        b = time.perf_counter_ns()
        timer.cancel()
        if data != msg:
            raise BenchError(f"udp echo mismatch at request {i} (size {size})")
        return b - a

    try:
        return await _measure(count, warmup, time_limit, request)
    finally:
        tr.close()


async def icmp_client(
    net: Any, host: str, size: int, count: int, warmup: int, seed: int, time_limit: float
) -> dict[str, Any]:
    """Echo requests from ``net.ping`` (the stack matches replies by identifier/sequence)."""

    async def request(i: int) -> int:
        a = time.perf_counter_ns()
        try:
            await net.ping(host, timeout=DATAGRAM_TIMEOUT, size=size)
        except TimeoutError:
            raise BenchError(f"icmp echo {i} (size {size}) lost") from None
        return time.perf_counter_ns() - a

    return await _measure(count, warmup, time_limit, request)


async def bulk_send(net: Any, host: str, nbytes: int, seed: int) -> dict[str, Any]:
    """Send ``nbytes`` of the seeded stream to a sink, half-close, return the sink's answer
    plus this side's CPU seconds for the transfer."""
    block = memoryview(bulk_block(seed))
    cpu0, t0 = time.process_time_ns(), time.perf_counter_ns()
    reader, writer = await net.open_connection(host, 9)
    try:
        writer.write(BULK_HEADER.pack(seed))
        left = nbytes
        while left:
            n = min(left, BULK_BLOCK)
            writer.write(block[:n])
            await writer.drain()
            left -= n
        if writer.can_write_eof():
            writer.write_eof()
        line = await asyncio.wait_for(reader.readline(), 60)
    finally:
        writer.close()
    t1, cpu1 = time.perf_counter_ns(), time.process_time_ns()
    if not line:
        raise BenchError("bulk sink closed without a result")
    sink = json.loads(line)
    return {"sink": sink, "sender_cpu_ns": cpu1 - cpu0, "sender_wall_ns": t1 - t0}


CLIENTS = {"tcp": tcp_client, "udp": udp_client, "icmp": icmp_client}
