"""The kernel side of the benchmark: plain blocking sockets, run inside a namespace.

    ip netns exec NS python -m anp_async.bench.kernel_peer serve
    ip netns exec NS python -m anp_async.bench.kernel_peer client --proto tcp --host 10.0.0.2 --size 64 ...
    ip netns exec NS python -m anp_async.bench.kernel_peer bulk-send --host 10.0.0.2 --bytes 64M
    ip netns exec NS python -m anp_async.bench.kernel_peer blast --host 10.0.0.2 --rate 20000 --duration 2

``serve`` runs the kernel's echo (TCP and UDP port 7) and bulk sink (TCP port 9) until stdin
closes. A ``client`` times each request/response with ``perf_counter_ns``, checks every echo
byte for byte, prints :data:`anp_async.bench.common.WARM_MARK` after warm-up and one JSON result
line at the end (or ``{"event": "error"}`` and exit status 1). ``blast`` is the paced UDP
sender of the livelock experiment, bounded by its rate, duration and a count cap.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time
from typing import Any

from .common import (
    BULK_BLOCK,
    BULK_HEADER,
    DATAGRAM_TIMEOUT,
    ECHO_PORT,
    SEQ,
    SINK_PORT,
    BulkCheck,
    bulk_block,
    emit,
    mark_warm,
    payload_source,
    request_offset,
)

_ICMP_HDR = struct.Struct("!BBHHH")
#: Hard cap on datagrams one ``blast`` may send, whatever the rate and duration asked.
BLAST_MAX_COUNT = 5_000_000
BLAST_MAX_SECONDS = 30.0


class PeerError(Exception):
    """An echo mismatch or a lost reply: the run is invalid."""


# ------------------------------------------------------------------------- servers


def _tcp_echo_conn(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(1 << 16)
        view = memoryview(buf)
        with contextlib.suppress(OSError):
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                conn.sendall(view[:n])


def _tcp_sink_conn(conn: socket.socket) -> None:
    """The bulk sink on kernel sockets: the same check as the asyncio one
    (:func:`anp_async.bench.apps.tcp_sink_handler`), with blocking reads."""
    with conn:
        buf = bytearray(1 << 18)
        view = memoryview(buf)
        total = 0
        t0 = cpu0 = 0
        with contextlib.suppress(OSError):
            header = conn.recv(BULK_HEADER.size, socket.MSG_WAITALL)
            if len(header) < BULK_HEADER.size:
                return  # closed before announcing its seed
            check = BulkCheck(BULK_HEADER.unpack(header)[0])
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                if not total:
                    t0, cpu0 = time.perf_counter_ns(), time.thread_time_ns()
                total += n
                check.update(view[:n])
            t1, cpu1 = time.perf_counter_ns(), time.thread_time_ns()
            res = {
                "bytes": total,
                "verified": check.ok,
                "wall_ns": t1 - t0,
                "cpu_ns": cpu1 - cpu0,
            }
            conn.sendall(json.dumps(res).encode() + b"\n")


def _accept_loop(sock: socket.socket, handler: Any) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def _udp_echo(sock: socket.socket) -> None:
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    while True:
        try:
            n, addr = sock.recvfrom_into(buf)
            sock.sendto(view[:n], addr)
        except OSError:
            return


def _family(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 address (``::`` serves both families), else AF_INET."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(host: str) -> int:
    """Kernel echo/sink servers until stdin reaches EOF."""
    socks = []
    for port, handler in ((ECHO_PORT, _tcp_echo_conn), (SINK_PORT, _tcp_sink_conn)):
        s = socket.socket(_family(host), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(64)
        socks.append(s)
        threading.Thread(target=_accept_loop, args=(s, handler), daemon=True).start()
    u = socket.socket(_family(host), socket.SOCK_DGRAM)
    u.bind((host, ECHO_PORT))
    socks.append(u)
    threading.Thread(target=_udp_echo, args=(u,), daemon=True).start()
    emit({"event": "ready", "pid": os.getpid()})
    sys.stdin.read()  # the harness closes our stdin (or kills us) to stop
    for s in socks:
        s.close()
    return 0


# ------------------------------------------------------------------------- clients


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    got = 0
    size = len(view)
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            raise PeerError("connection closed mid-echo")
        got += n


def _run_requests(one: Any, count: int, warmup: int, time_limit: float) -> dict[str, Any]:
    """Call ``one(i) -> ns`` for warm-up then ``count`` measured requests (time-bounded)."""
    samples: list[int] = []
    deadline = time.monotonic() + time_limit
    truncated = False
    t0 = cpu0 = 0
    for i in range(warmup + count):
        if i == warmup:
            mark_warm()
            t0, cpu0 = time.perf_counter_ns(), time.process_time_ns()
        ns = one(i)
        if i >= warmup:
            samples.append(ns)
        if time.monotonic() > deadline:
            truncated = i + 1 < warmup + count
            break
    if count and not t0:
        raise PeerError("time limit reached during warm-up")
    t1, cpu1 = time.perf_counter_ns(), time.process_time_ns()
    return {
        "samples_ns": samples,
        "wall_ns": t1 - t0,
        "cpu_ns": cpu1 - cpu0,
        "truncated": truncated,
    }


def tcp_client(
    host: str, size: int, count: int, warmup: int, seed: int, time_limit: float
) -> dict[str, Any]:
    src = payload_source(seed, size)
    sock = socket.create_connection((host, ECHO_PORT), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rbuf = bytearray(size)
    rview = memoryview(rbuf)
    perf = time.perf_counter_ns

    def one(i: int) -> int:
        off = request_offset(i, size)
        msg = src[off : off + size]
        a = perf()
        sock.sendall(msg)
        _recv_exact(sock, rview)
        b = perf()
        if rbuf != msg:
            raise PeerError(f"tcp echo mismatch at request {i} (size {size})")
        return b - a

    with sock:
        return _run_requests(one, count, warmup, time_limit)


def udp_client(
    host: str, size: int, count: int, warmup: int, seed: int, time_limit: float
) -> dict[str, Any]:
    src = payload_source(seed, size)
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    sock.connect((host, ECHO_PORT))
    sock.settimeout(DATAGRAM_TIMEOUT)
    rbuf = bytearray(size + 1)
    rview = memoryview(rbuf)
    perf = time.perf_counter_ns

    def one(i: int) -> int:
        off = request_offset(i, size)
        msg = src[off : off + size]
        a = perf()
        sock.send(msg)
        try:
            n = sock.recv_into(rbuf)
        except TimeoutError:
            raise PeerError(f"udp echo {i} (size {size}) lost") from None
        b = perf()
        if n != size or rview[:n] != msg:
            raise PeerError(f"udp echo mismatch at request {i} (size {size})")
        return b - a

    with sock:
        return _run_requests(one, count, warmup, time_limit)


def _word_sum(data: bytes) -> int:
    """Sum of the big-endian 16-bit words of ``data`` (RFC 1071, not yet folded)."""
    if len(data) % 2:
        data += b"\0"
    words = array.array("H", data)
    if sys.byteorder == "little":
        words.byteswap()
    return sum(words)


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def icmp_client(
    host: str, size: int, count: int, warmup: int, seed: int, time_limit: float
) -> dict[str, Any]:
    """Echo requests on a raw socket; the reply's identifier, sequence and data are checked."""
    payload = payload_source(seed, size)[:size]
    psum = _word_sum(payload)
    ident = random.Random(seed).getrandbits(16) ^ (os.getpid() & 0xFFFF)
    if _family(host) == socket.AF_INET6:
        return _icmp6_client(host, payload, ident, count, warmup, time_limit)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(DATAGRAM_TIMEOUT)
    rbuf = bytearray(65536 + 64)
    rview = memoryview(rbuf)
    addr = (host, 0)
    perf = time.perf_counter_ns

    def one(i: int) -> int:
        seq = i & 0xFFFF
        csum = ~_fold(psum + 0x0800 + ident + seq) & 0xFFFF  # RFC 792: type 8 code 0
        hdr = _ICMP_HDR.pack(8, 0, csum, ident, seq)
        a = perf()
        sock.sendmsg([hdr, payload], [], 0, addr)
        while True:
            try:
                n = sock.recv_into(rbuf)
            except TimeoutError:
                raise PeerError(f"icmp echo {i} (size {size}) lost") from None
            ihl = (rbuf[0] & 0x0F) * 4
            if n < ihl + 8:
                continue
            typ, _, _, rid, rseq = _ICMP_HDR.unpack_from(rbuf, ihl)
            if typ == 0 and rid == ident:  # echo reply to us (RFC 792)
                break
        b = perf()
        if rseq != seq or n - ihl - 8 != size or rview[ihl + 8 : n] != payload:
            raise PeerError(f"icmp echo mismatch at request {i} (size {size})")
        return b - a

    with sock:
        return _run_requests(one, count, warmup, time_limit)


def _icmp6_client(
    host: str, payload: bytes, ident: int, count: int, warmup: int, time_limit: float
) -> dict[str, Any]:
    """ICMPv6 echo (RFC 4443 4.1) on a raw socket; the kernel fills in the checksum of an
    ICMPv6 raw socket (RFC 3542 3.1) and hands over the message without the IPv6 header."""
    size = len(payload)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.settimeout(DATAGRAM_TIMEOUT)
    rbuf = bytearray(65536 + 64)
    rview = memoryview(rbuf)
    addr = (host, 0)
    perf = time.perf_counter_ns

    def one(i: int) -> int:
        seq = i & 0xFFFF
        hdr = _ICMP_HDR.pack(128, 0, 0, ident, seq)
        a = perf()
        sock.sendmsg([hdr, payload], [], 0, addr)
        while True:
            try:
                n = sock.recv_into(rbuf)
            except TimeoutError:
                raise PeerError(f"icmp6 echo {i} (size {size}) lost") from None
            if n < 8:
                continue
            typ, _, _, rid, rseq = _ICMP_HDR.unpack_from(rbuf, 0)
            if typ == 129 and rid == ident:  # echo reply to us
                break
        b = perf()
        if rseq != seq or n - 8 != size or rview[8:n] != payload:
            raise PeerError(f"icmp6 echo mismatch at request {i} (size {size})")
        return b - a

    with sock:
        return _run_requests(one, count, warmup, time_limit)


def bulk_send(host: str, nbytes: int, seed: int) -> dict[str, Any]:
    block = memoryview(bulk_block(seed))
    cpu0, t0 = time.process_time_ns(), time.perf_counter_ns()
    with socket.create_connection((host, SINK_PORT), timeout=60) as sock:
        sock.sendall(BULK_HEADER.pack(seed))
        left = nbytes
        while left:
            n = min(left, BULK_BLOCK)
            sock.sendall(block[:n])
            left -= n
        sock.shutdown(socket.SHUT_WR)
        line = sock.makefile("rb").readline()
    t1, cpu1 = time.perf_counter_ns(), time.process_time_ns()
    if not line:
        raise PeerError("bulk sink closed without a result")
    return {"sink": json.loads(line), "sender_cpu_ns": cpu1 - cpu0, "sender_wall_ns": t1 - t0}


def blast(host: str, rate: float, duration: float, size: int) -> dict[str, Any]:
    """Paced UDP datagrams to the sink port: bounded by rate x duration, a count cap and a
    wall-clock cap."""
    duration = min(duration, BLAST_MAX_SECONDS)
    limit = min(int(rate * duration), BLAST_MAX_COUNT)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, SINK_PORT))
    sock.setblocking(False)
    msg = bytearray(max(size, SEQ.size))
    sent = errors = 0
    t0 = time.perf_counter()
    end = t0 + duration
    with sock:
        while sent < limit:
            now = time.perf_counter()
            if now >= end:
                break
            due = min(int((now - t0) * rate), limit)
            if due <= sent:
                time.sleep(min(0.0002, end - now))
                continue
            for _ in range(min(due - sent, 256)):
                SEQ.pack_into(msg, 0, sent)
                try:
                    sock.send(msg)
                except OSError:  # ENOBUFS / EAGAIN: the sender's own queue is full
                    errors += 1
                sent += 1
    elapsed = time.perf_counter() - t0
    return {
        "sent": sent,
        "send_errors": errors,
        "elapsed": elapsed,
        "offered_pps": (sent - errors) / elapsed if elapsed > 0 else 0.0,
    }


# ------------------------------------------------------------------------- main

CLIENTS = {"tcp": tcp_client, "udp": udp_client, "icmp": icmp_client}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anp_async.bench.kernel_peer")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", default="0.0.0.0")
    c = sub.add_parser("client")
    c.add_argument("--proto", choices=sorted(CLIENTS), required=True)
    c.add_argument("--host", required=True)
    c.add_argument("--size", type=int, required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--warmup", type=int, default=0)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--time-limit", type=float, default=30.0)
    b = sub.add_parser("bulk-send")
    b.add_argument("--host", required=True)
    b.add_argument("--bytes", type=int, required=True)
    b.add_argument("--seed", type=int, default=1)
    bl = sub.add_parser("blast")
    bl.add_argument("--host", required=True)
    bl.add_argument("--rate", type=float, required=True)
    bl.add_argument("--duration", type=float, required=True)
    bl.add_argument("--size", type=int, default=64)
    args = p.parse_args(argv)
    try:
        if args.cmd == "serve":
            return serve(args.host)
        if args.cmd == "client":
            res = CLIENTS[args.proto](
                args.host, args.size, args.count, args.warmup, args.seed, args.time_limit
            )
        elif args.cmd == "bulk-send":
            res = bulk_send(args.host, args.bytes, args.seed)
        else:
            res = blast(args.host, args.rate, args.duration, args.size)
    except (PeerError, OSError) as e:
        emit({"event": "error", "message": f"{type(e).__name__}: {e}"})
        return 1
    emit({"event": "result", **res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
