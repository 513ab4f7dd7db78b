"""Profile the stack's hot path: it serves TCP 64 B request/response, ICMP echo or bulk
receive to a kernel client (or bulk-sends to a kernel sink) over a TAP in a namespace of
its own, in this process.

    python -m anp_async.bench.profile_rr rr --count 5000 --mode interrupt
    python -m anp_async.bench.profile_rr rr --count 3000 --cprofile /tmp/rr.prof   # + top 30
    python -m anp_async.bench.profile_rr bulk --bytes 256M --mode adaptive
    python -m anp_async.bench.profile_rr icmp --count 5000 --mode interrupt   # 64 B pings
    python -m anp_async.bench.profile_rr send --bytes 256M --mode adaptive

Prints one JSON line: the client's mean round trip (or MB/s) and this process's CPU per
request (or per MB) while the client ran. ``--cprofile`` adds cProfile (which slows the
Python part several times: use it for call counts and shares, not for the CPU figure).
For an A/B comparison of two trees, run it alternately with ``PYTHONPATH`` pointing at
each, under the same load (``uptime``). Bounded: one client, ``--count`` requests or
``--bytes`` bytes, a 120 s limit; the namespace is removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from anp_async import Stack, StackConfig, TcpConfig
from anp_async.nic.netns import Netns, unique_name
from anp_async.nic.tap import TapNic

from .apps import tcp_echo_handler

_RR_CLIENT = """
import socket, time
s = socket.create_connection(('10.0.0.2', 7), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b'x' * 64
for i in range(200):
    s.sendall(msg); s.recv(64)
print('warm', flush=True)
t = time.perf_counter()
for i in range({n}):
    s.sendall(msg)
    got = 0
    while got < 64:
        got += len(s.recv(64 - got))
print((time.perf_counter() - t) / {n} * 1e6, flush=True)
"""

_SINK_SERVER = """
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('10.0.0.1', 9))
srv.listen(1)
print('warm', flush=True)
c, _ = srv.accept()
buf = bytearray(1 << 20)
n = 0
while True:
    k = c.recv_into(buf)
    if not k:
        break
    n += k
print(n, flush=True)
"""

_BULK_CLIENT = """
import socket, time
s = socket.create_connection(('10.0.0.2', 9), timeout=5)
print('warm', flush=True)
blk = bytes(range(256)) * 256
left = {n}
while left > 0:
    left -= s.send(blk[:min(left, len(blk))])
s.shutdown(socket.SHUT_WR)
s.recv(10)
print(0, flush=True)
"""


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(1 << 16):
        pass
    writer.close()


class _BufferedSink(asyncio.BufferedProtocol):
    """The sink as a BufferedProtocol: bytes land in one reused buffer (recv_into's way)."""

    def __init__(self) -> None:
        self._buf = bytearray(1 << 18)
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> bytearray:
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:
        pass

    def eof_received(self) -> bool:
        return False


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


#: Pings the ICMP client sends before its measured ones.
WARMUP_PINGS = 200


def icmp_client_argv(count: int) -> list[str]:
    """Python arguments of the benchmark's own ICMP client (64 B pings to 10.0.0.2): it
    prints a warm line after :data:`WARMUP_PINGS` pings, then ``count`` more and a JSON
    line (:func:`mean_rtt_us` reads it)."""
    return ["-m", "anp_async.bench.kernel_peer", "client", "--proto", "icmp",
            "--host", "10.0.0.2", "--size", "64", "--count", str(count),
            "--warmup", str(WARMUP_PINGS)]  # fmt: skip


def mean_rtt_us(line: bytes) -> float:
    """The mean round trip in the kernel client's JSON result line."""
    samples = json.loads(line)["samples_ns"]
    return sum(samples) / len(samples) / 1e3


def _client_argv(args: argparse.Namespace) -> list[str]:
    """The kernel side's Python arguments: it prints a warm line, then its result line."""
    if args.what == "icmp":
        return icmp_client_argv(args.count)
    if args.what == "send":
        return ["-c", _SINK_SERVER]
    if args.what == "rr":
        return ["-c", _RR_CLIENT.format(n=args.count)]
    return ["-c", _BULK_CLIENT.format(n=args.bytes)]


async def _bulk_send(stack: Stack, nbytes: int) -> None:
    # (The sink printed its warm line after listen(): no wait, which the figure would
    # have counted.)
    _, w = await stack.open_connection("10.0.0.1", 9)
    block = bytes(range(256)) * 256
    left = nbytes
    while left > 0:
        w.write(block[: min(left, len(block))])
        left -= len(block)
        await w.drain()
    w.close()


def _result(args: argparse.Namespace, line: bytes, cpu: float, secs: float) -> dict[str, Any]:
    if args.what in ("rr", "icmp"):
        rr_us = mean_rtt_us(line) if args.what == "icmp" else float(line)
        return {
            "what": args.what, "mode": args.mode, "count": args.count,
            "rr_us": rr_us, "cpu_us_per_req": cpu / args.count * 1e6,
        }  # fmt: skip
    mb = args.bytes / 1e6
    return {
        "what": "bulk-" + ("send" if args.what == "send" else "receive"), "mode": args.mode,
        "bytes": args.bytes, "mbps": mb / secs, "cpu_ms_per_mb": cpu / mb * 1e3,
    }  # fmt: skip


@contextlib.asynccontextmanager
async def kernel_client(ns: Netns, argv: list[str]) -> AsyncIterator[asyncio.StreamReader]:
    """Run ``python argv`` in ``ns``; past its warm line, yield its output (the result
    line comes next). It is killed if still running when the block ends."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.name, sys.executable, *argv, stdout=subprocess.PIPE
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        await asyncio.wait_for(proc.stdout.readline(), 30)  # warm
        yield proc.stdout
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _measure(
    args: argparse.Namespace, stack: Stack, ns: Netns, prof: cProfile.Profile | None
) -> dict[str, Any]:
    """Start the kernel side; from its warm line to its result line, this process's CPU."""
    async with kernel_client(ns, _client_argv(args)) as out:
        c0, t0 = _cpu(), time.perf_counter()
        if prof is not None:
            prof.enable()
        if args.what == "send":
            await _bulk_send(stack, args.bytes)
        line = await asyncio.wait_for(out.readline(), 120)
        if prof is not None:
            prof.disable()
        c1, t1 = _cpu(), time.perf_counter()
    return _result(args, line, c1 - c0, t1 - t0)


async def _run(args: argparse.Namespace, prof: cProfile.Profile | None) -> dict[str, Any]:
    ns = Netns.create(unique_name("anp-prof"))
    try:
        tap = TapNic.open("anpprof0", peer="10.0.0.1/24", netns=ns.name, vnet_hdr=args.offload)
        tcp = TcpConfig(
            nodelay=True, **({"recv_buffer": args.recv_buffer} if args.recv_buffer else {})
        )
        cfg = StackConfig(nic=tap, ip="10.0.0.2/24", mode=args.mode, tcp=tcp)
        async with Stack(cfg) as stack:
            await stack.start_server(tcp_echo_handler, "10.0.0.2", 7)
            if args.sink == "buffered":
                await stack.create_server(_BufferedSink, "10.0.0.2", 9)
            else:
                await stack.start_server(_sink, "10.0.0.2", 9)
            return await _measure(args, stack, ns, prof)
    finally:
        ns.delete()


def main(argv: list[str] | None = None) -> int:
    from anp_async.cli import parse_size

    p = argparse.ArgumentParser(prog="python -m anp_async.bench.profile_rr")
    p.add_argument("what", choices=("rr", "icmp", "bulk", "send"))
    p.add_argument("--count", type=int, default=5000, help="requests (rr)")
    p.add_argument("--bytes", type=parse_size, default=256 << 20, help="bytes (bulk)")
    p.add_argument("--mode", default="interrupt")
    p.add_argument(
        "--sink", choices=("stream", "buffered"), default="stream",
        help="bulk's receiver: a StreamReader task or a BufferedProtocol (default stream)",
    )  # fmt: skip
    p.add_argument("--no-offload", dest="offload", action="store_false")
    p.add_argument(
        "--recv-buffer", type=parse_size, help="TcpConfig.recv_buffer (default: its default)"
    )
    p.add_argument("--cprofile", metavar="FILE", help="write cProfile stats, print the top 30")
    a = p.parse_args(argv)
    a.count = max(1, min(a.count, 1_000_000))
    a.bytes = max(1, min(a.bytes, 4 << 30))
    prof = cProfile.Profile() if a.cprofile else None
    res = asyncio.run(_run(a, prof))
    print(json.dumps(res))
    if prof is not None:
        prof.dump_stats(a.cprofile)
        pstats.Stats(a.cprofile).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
