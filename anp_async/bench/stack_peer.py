"""The process under test: the stack on a TAP (or asyncio on kernel sockets), driven by the harness.

    python -m anp_async.bench.stack_peer --net stack --tap anpb0 --netns NS --mode poll
    python -m anp_async.bench.stack_peer --net kernel --ip 10.0.1.1       (inside a namespace)

It starts the benchmark servers (:func:`anp_async.bench.apps.start_servers`), prints
``{"event": "ready", "pid": ...}`` and then runs one JSON command per stdin line, answering
each with one JSON line (``{"event": "result", ...}`` or ``{"event": "error", ...}``):

- ``{"cmd": "client", "proto", "host", "size", "count", "warmup", "seed", "time_limit"}``
- ``{"cmd": "bulk_send", "host", "bytes", "seed"}``
- ``{"cmd": "sink"[, "work_us": W]}``: the livelock application's counters (and set its
  work per datagram in microseconds)
- ``{"cmd": "stats"}``: ``stack.stats()``
- ``{"cmd": "quit"}`` (or EOF on stdin)

The stack runs in its own process so that its CPU time can be measured on its own. With
``ANP_BENCH_PROFILE=DIR`` in its environment the process runs under cProfile and writes
``DIR/stack_peer-<pid>.prof`` and ``DIR/stack_peer-<pid>.gc.json`` (the garbage
collector's passes and time per generation) when it ends: the profiles behind the
performance work come from the same benchmarks as the figures. With
``--queues N`` (N > 1) this process is the supervisor of a multi-queue host
(:class:`anp_async.mq.MultiQueueHost`): every worker runs the benchmark servers and
answers the same commands on a Unix socket of its own; ``client`` and ``bulk_send`` run
in worker 0 and report the CPU all workers used, ``stats`` is the host's (summed), and the
ready line lists the workers' ``pids`` (the harness sums their CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import traceback
from typing import Any

from .apps import CLIENTS, BenchError, KernelNet, bulk_send, start_servers
from .common import emit, profiled


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anp_async.bench.stack_peer")
    p.add_argument("--net", choices=("stack", "kernel"), default="stack")
    p.add_argument("--tap", default="anpb0")
    p.add_argument("--netns", help="namespace the TAP is created in")
    p.add_argument("--ip", default="10.0.0.2/24", help="our address (stack) / bind address")
    p.add_argument("--peer", default="10.0.0.1/24", help="kernel end of the TAP")
    p.add_argument("--ip6", help="the stack's IPv6 address/prefix (dual stack)")
    p.add_argument("--peer6", help="IPv6 address/prefix of the TAP's kernel end")
    p.add_argument("--mac", default="02:00:00:00:be:02")
    p.add_argument("--mode", default="interrupt")
    p.add_argument("--mode-params", default="{}", help="JSON object of mode parameters")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument(
        "--queues", type=int, default=1,
        help="multi-queue TAP with one stack worker process per queue (default 1)",
    )  # fmt: skip
    p.add_argument(
        "--no-offload",
        dest="offload",
        action="store_false",
        help="open the TAP without the virtio-net header (no checksum offload, no TSO/GSO)",
    )
    return p.parse_args(argv)


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _run_command(cmd: dict[str, Any], net: Any, sink: Any, stack: Any) -> dict[str, Any]:
    """One command (``quit`` excepted): the result or error event to answer."""
    try:
        name = cmd.pop("cmd")
        if name == "client":
            proto = cmd.pop("proto")
            res = await CLIENTS[proto](net, **cmd)
        elif name == "bulk_send":
            res = await bulk_send(net, cmd["host"], cmd["bytes"], cmd["seed"])
        elif name == "sink":
            if "work_us" in cmd:  # the livelock application's work per datagram
                sink.work_us = int(cmd["work_us"])
            res = sink.counters()
        elif name == "stats":
            res = stack.stats() if stack is not None else {}
        else:
            raise BenchError(f"unknown command {name!r}")
        return {"event": "result", **res}
    except (BenchError, OSError, asyncio.IncompleteReadError, TimeoutError) as e:
        return {"event": "error", "message": f"{type(e).__name__}: {e}"}
    except Exception as e:  # a bug: report it with its traceback, keep serving
        return {
            "event": "error",
            "message": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }


async def _serve_commands(net: Any, sink: Any, stack: Any) -> None:
    reader = await _stdin_lines()
    while True:
        line = await reader.readline()
        if not line:
            return
        try:
            cmd = json.loads(line)
        except ValueError as e:
            emit({"event": "error", "message": f"not a JSON command: {e}"})
            continue
        if isinstance(cmd, dict) and cmd.get("cmd") == "quit":
            return
        emit(await _run_command(cmd, net, sink, stack))


async def _main(args: argparse.Namespace, nic: Any) -> int:
    if nic is None:
        net = KernelNet()
        host = args.ip.partition("/")[0]
        _, sink = await start_servers(net, host)
        emit({"event": "ready", "pid": _pid()})
        await _serve_commands(net, sink, None)
        return 0

    from anp_async import Stack, StackConfig, TcpConfig

    cfg = StackConfig(
        nic=nic,
        ip=args.ip,
        ip6=args.ip6,
        mac=args.mac,
        mode="interrupt" if args.mode == "hardirq" else args.mode,
        mode_params=json.loads(args.mode_params),
        tcp=TcpConfig(nodelay=True),  # the kernel peers and asyncio set TCP_NODELAY too
    )
    async with Stack(cfg) as stack:
        if args.mode == "hardirq":  # the livelock experiment's model of preempting IRQs
            from .hardirq import HardIrqMode

            stack.set_mode(HardIrqMode())
        _, sink = await start_servers(stack, stack.ip)
        if stack.v6 is not None:  # ready once DAD is done (RFC 4862), else SYNs are dropped
            for _ in range(500):
                if stack.v6.ready:
                    break
                await asyncio.sleep(0.01)
        emit(
            {
                "event": "ready",
                "pid": _pid(),
                "mode": stack.mode_name,
                "mode_params": stack.mode_params,
            }
        )
        await _serve_commands(stack, sink, stack)
    return 0


def _pid() -> int:
    return os.getpid()


def main(argv: list[str] | None = None) -> int:
    out = os.environ.get("ANP_BENCH_PROFILE")
    if not out:
        return _main_unprofiled(argv)
    return profiled(out, "stack_peer", lambda: _main_unprofiled(argv))


def _main_unprofiled(argv: list[str] | None) -> int:
    args = _parse_args(argv)
    if args.net == "stack" and args.queues > 1:
        from .mq_peer import run_host

        return run_host(args)
    nic = None
    if args.net == "stack":
        from anp_async.nic.tap import TapNic

        # Opened before the loop starts: pyroute2's synchronous IPRoute runs its own loop.
        nic = TapNic.open(
            args.tap, peer=args.peer, netns=args.netns, vnet_hdr=args.offload, peer6=args.peer6
        )
    try:
        if args.loop == "uvloop":
            import uvloop

            return uvloop.run(_main(args, nic))
        return asyncio.run(_main(args, nic))
    finally:
        if nic is not None:
            with contextlib.suppress(Exception):
                nic.close()


if __name__ == "__main__":
    raise SystemExit(main())
