"""The stack under test as a multi-queue host: ``stack_peer --net stack --queues N`` (N > 1).

This process is the supervisor (:class:`anp_async.mq.MultiQueueHost`); each worker runs
:func:`worker_setup`: the benchmark servers (:func:`anp_async.bench.apps.start_servers`,
so a kernel client's connection is served by the worker its flow is steered to) and a Unix
socket that answers the stack peer's commands (:func:`anp_async.bench.stack_peer._run_command`)
one JSON line each. The supervisor speaks the stack peer's protocol on stdin/stdout:

- ``client`` and ``bulk_send`` run in worker 0 (one connection: one worker); the answer's
  ``cpu_ns`` / ``sender_cpu_ns`` is replaced by the CPU *all* workers used over the same
  span (from warm-up end for ``client``), so CPU per request is the host's;
- ``stats``: the host's stats from its control socket (summed, each worker's under
  ``workers``);
- ``sink`` (the livelock experiment) is refused: its application counters are per worker.

The ready line carries ``pids``: the workers, whose CPU the harness sums
(:data:`anp_async.bench.common.CPU_GROUPS`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from typing import Any

from .common import WARM_MARK, emit, proc_cpu_ns

#: The environment variable naming the folder of the workers' command sockets.
SOCKDIR_ENV = "ANP_BENCH_MQ_DIR"
_keep: list[Any] = []


def _worker_sock(sockdir: str, index: int) -> str:
    return os.path.join(sockdir, f"w{index}.sock")


class _LineOut:
    """``sys.stdout`` while a worker runs a command: the warm-up mark goes to the caller."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def write(self, text: str) -> int:
        self.writer.write(text.encode())
        return len(text)

    def flush(self) -> None:
        pass


async def worker_setup(stack: Any, index: int) -> None:
    """``HostConfig.setup`` of every worker: benchmark servers and the command socket."""
    from .apps import start_servers
    from .stack_peer import _run_command

    servers, sink = await start_servers(stack, stack.ip)
    lock = asyncio.Lock()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                async with lock:
                    out, sys.stdout = sys.stdout, _LineOut(writer)
                    try:
                        ev = await _run_command(json.loads(line), stack, sink, stack)
                    finally:
                        sys.stdout = out
                writer.write(json.dumps(ev).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    path = _worker_sock(os.environ[SOCKDIR_ENV], index)
    server = await asyncio.start_unix_server(handle, path, limit=1 << 24)
    _keep.extend([servers, sink, server])


def _cpu(pids: list[int | None]) -> int:
    return sum(max(0, proc_cpu_ns(p)) for p in pids if p is not None)


async def _forward(sockdir: str, pids: list[int | None], cmd: dict[str, Any]) -> dict[str, Any]:
    """Run ``cmd`` in worker 0; the CPU figures become the sum over every worker."""
    reader, writer = await asyncio.open_unix_connection(_worker_sock(sockdir, 0), limit=1 << 24)
    try:
        writer.write(json.dumps(cmd).encode() + b"\n")
        cpu0 = _cpu(pids)
        while True:
            line = await reader.readline()
            if not line:
                return {"event": "error", "message": "worker 0 closed its command socket"}
            if line.decode().strip() == WARM_MARK:
                cpu0 = _cpu(pids)
                sys.stdout.write(WARM_MARK + "\n")
                sys.stdout.flush()
                continue
            cpu = _cpu(pids) - cpu0
            ev: dict[str, Any] = json.loads(line)
            if ev.get("event") == "result":
                if "cpu_ns" in ev:
                    ev["worker0_cpu_ns"], ev["cpu_ns"] = ev["cpu_ns"], cpu
                if "sender_cpu_ns" in ev:
                    ev["worker0_cpu_ns"], ev["sender_cpu_ns"] = ev["sender_cpu_ns"], cpu
            return ev
    finally:
        writer.close()


async def _host_stats(path: str) -> dict[str, Any]:
    from ..control import encode

    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 26)
    try:
        writer.write(encode({"cmd": "stats"}))
        ans = json.loads(await asyncio.wait_for(reader.readline(), 30))
    finally:
        writer.close()
    if not ans.get("ok"):
        return {"event": "error", "message": f"stats: {ans.get('error')}"}
    return {"event": "result", **ans["stats"]}


async def _supervise(args: argparse.Namespace, sockdir: str) -> int:
    from ..mq import HostConfig, MultiQueueHost
    from ..proto.tcp.config import TcpConfig
    from .stack_peer import _stdin_lines

    control = os.path.join(sockdir, "host.sock")
    cfg = HostConfig(
        tap=args.tap, queues=args.queues, ip=args.ip, peer=args.peer, netns=args.netns,
        mac=args.mac, vnet_hdr=args.offload, mode=args.mode,
        mode_params=json.loads(args.mode_params),
        tcp=TcpConfig(nodelay=True),  # the kernel peers and asyncio set TCP_NODELAY too
        control=control, setup="anp_async.bench.mq_peer:worker_setup", loop=args.loop,
    )  # fmt: skip
    async with MultiQueueHost(cfg) as host:
        pids = host.pids()
        emit({"event": "ready", "pid": os.getpid(), "pids": pids, "queues": args.queues,
              "mode": args.mode, "mode_params": cfg.mode_params})  # fmt: skip
        reader = await _stdin_lines()
        while line := await reader.readline():
            try:
                cmd = json.loads(line)
                name = cmd.get("cmd")
            except (ValueError, AttributeError) as e:
                emit({"event": "error", "message": f"not a JSON command: {e}"})
                continue
            if name == "quit":
                break
            if name in ("client", "bulk_send"):
                ev = await _forward(sockdir, host.pids(), cmd)
            elif name == "stats":
                ev = await _host_stats(control)
            else:
                ev = {"event": "error", "message": f"{name!r} does not run with --queues > 1"}
            emit(ev)
    return 0


def run_host(args: argparse.Namespace) -> int:
    """The stack peer as a multi-queue host (``stack_peer --queues N``)."""
    if args.mode == "hardirq" or args.ip6:
        emit({"event": "error", "message": "--queues > 1 runs neither hardirq nor IPv6"})
        return 2
    sockdir = tempfile.mkdtemp(prefix="anp-bench-mq-")
    os.environ[SOCKDIR_ENV] = sockdir  # the workers inherit it
    try:
        if args.loop == "uvloop":
            import uvloop

            return int(uvloop.run(_supervise(args, sockdir)))
        return asyncio.run(_supervise(args, sockdir))
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(sockdir)
