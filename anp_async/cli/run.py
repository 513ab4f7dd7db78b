"""``anp run``: an unmodified program with its sockets on the stack.

::

    anp run [stack options] [--isolate] -- PROGRAM ARGS        a stack of its own
    anp run --queues N [stack options] -- PROGRAM ARGS         N workers, one per TAP queue
    anp run --attach --tap T [--isolate] -- PROGRAM ARGS       the stack `anp up --tap T` runs
    anp run --inprocess [--loop uvloop] [--map-host F=T] -- python app.py ARGS

Any dynamically linked program (C, curl, nc, ``python3 app.py`` with blocking sockets or
asyncio) runs as a child with the preload library (:mod:`anp_async.preload`): this process
brings the stack up (or attaches to ``anp up``'s), serves the socket API beside the
control socket, and returns the program's exit status. With ``--queues N`` the stack is
a multi-queue host (:mod:`anp_async.mq`, N worker processes); worker 0 serves the
program's socket API and its listeners and UDP ports reach every worker
(:mod:`anp_async.preload.siblings`). ``--inprocess`` (implied by
``--loop uvloop`` and ``--map-host``) runs a Python asyncio program inside anp on a stack
event loop instead (:mod:`.run_inprocess`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from .. import control
from ..preload.launch import (
    RunError,
    api_socket_path,
    find_library,
    program_argv,
    program_env,
    run_child,
)
from ..preload.server import serve_socket_api
from .base import CliError, Command, register_command
from .options import _check_stack_args, mode_from_args, open_stack_from_args
from .run_inprocess import cmd_run_inprocess, sigterm_exit
from .serving import control_server


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--attach",
        action="store_true",
        help="use the stack that `anp up --tap T` runs (several programs share it)",
    )
    p.add_argument(
        "--isolate",
        action="store_true",
        help="start the program in an empty network namespace of its own, so a socket the "
        "preload library does not take fails instead of reaching the host's interfaces",
    )
    p.add_argument(
        "--queues", type=int, default=1, metavar="N",
        help="a multi-queue TAP with one stack worker process per queue (default 1); the "
        "program's servers are served by every worker",
    )  # fmt: skip
    p.add_argument(
        "--inprocess",
        action="store_true",
        help="run a Python asyncio program inside anp on a stack event loop (no preload "
        "library; implied by --loop uvloop and --map-host)",
    )
    p.add_argument(
        "--map-host",
        action="append",
        metavar="FROM=TO",
        help="(--inprocess) treat host FROM (as the program writes it: an address or name) "
        "as address TO, e.g. 127.0.0.1=10.0.0.1 for a program with a hard-coded address",
    )
    p.add_argument(
        "program",
        nargs=argparse.REMAINDER,
        help="-- PROGRAM [args] (any program; -- python app.py [args] with --inprocess)",
    )


def cmd_run(args: argparse.Namespace) -> int:
    """``anp run``: the program's exit status (2 when the stack cannot come up)."""
    if args.inprocess or args.loop == "uvloop" or args.map_host:
        if args.attach or args.isolate or args.queues != 1:
            raise CliError(
                "--attach, --isolate and --queues run programs through the preload library, "
                "not --inprocess (nor --loop uvloop, --map-host)"
            )
        return cmd_run_inprocess(args)
    words = list(args.program)
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise CliError("no program given: anp run [options] -- PROGRAM [ARGS]")
    main: Coroutine[Any, Any, int]
    if args.queues < 1 or args.queues > 256:
        raise CliError(f"--queues {args.queues}: 1..256")
    if args.attach:
        if args.netns:
            raise CliError("--attach uses a running stack: --netns belongs to its anp up")
        if args.queues != 1:
            raise CliError("--attach uses a running stack: --queues belongs to its anp up")
        main = run_attached(args, words)
    else:
        _check_stack_args(args)
        mode_from_args(args)
        if args.netns:
            from ..nic.netns import Netns

            if Netns(args.netns).exists():
                raise CliError(f"network namespace {args.netns} already exists")
        main = run_with_stack(args, words) if args.queues == 1 else run_with_host(args, words)
    old_sigterm = signal.signal(signal.SIGTERM, sigterm_exit)
    try:
        with asyncio.Runner() as runner:
            return runner.run(main)
    except RunError as e:
        raise CliError(str(e)) from None
    finally:
        signal.signal(signal.SIGTERM, old_sigterm)


async def run_with_stack(args: argparse.Namespace, words: list[str]) -> int:
    """Bring the stack up from the options, serve the program, take the stack down."""
    lib = find_library()
    api_path = api_socket_path(args.tap)
    if control.serving(control.socket_path(args.tap)):
        raise RunError(f"a stack already runs on TAP {args.tap} (use --attach to share it)")
    args.socket = None
    async with open_stack_from_args(args) as stack, control_server(stack, args):
        async with serve_socket_api(stack, api_path) as api:
            where = f" in netns {args.netns}" if args.netns else ""
            params = ",".join(f"{k}={v}" for k, v in stack.mode_params.items())
            _announce(
                f"anp run: stack {args.ip} mac {stack.mac} up on tap {args.tap}{where}, "
                f"kernel side {args.peer}, mode {stack.mode_name}"
                f"{'(' + params + ')' if params else ''}, program sockets via {lib}"
            )
            code = await run_child(
                program_argv(words, args.isolate), program_env(lib, api_path, args.isolate)
            )
            api_stats = api.stats()
        tcp = stack.stats().get("tcp", {})
        _announce(
            f"anp run: stack down (tcp active_opens={tcp.get('active_opens', 0)} "
            f"passive_opens={tcp.get('passive_opens', 0)} "
            f"rx_segments={tcp.get('rx_segments', 0)} tx_segments={tcp.get('tx_segments', 0)}; "
            f"sockets api connects={api_stats.get('connects', 0)} "
            f"accepted={api_stats.get('accepted', 0)})"
        )
    return code


async def run_with_host(args: argparse.Namespace, words: list[str]) -> int:
    """``--queues N``: a multi-queue host (N workers); worker 0 serves the program's API."""
    from ..mq.host import MultiQueueHost
    from ..nic.netns import Netns
    from .serving import control_path
    from .up_queues import check_trace_filter, host_config_from_args

    lib = find_library()
    api_path = api_socket_path(args.tap)
    if getattr(args, "ip6", None):
        raise RunError("--queues with an IPv6 address is not supported yet")
    args.socket = None
    if control.serving(control_path(args)):
        raise RunError(f"a stack already runs on TAP {args.tap} (use --attach to share it)")
    check_trace_filter(args)
    ns = Netns.create(args.netns) if args.netns else None
    try:
        cfg = host_config_from_args(args, ns)
        host = MultiQueueHost(cfg, on_death=lambda d: _announce(f"anp run: {d.describe()}; "
                              "its connections are gone, the other workers keep serving"))  # fmt: skip
        try:
            await host.start()
        except (OSError, RuntimeError, ValueError) as e:
            raise RunError(f"cannot start {args.queues} workers on TAP {args.tap}: {e}") from None
        try:
            where = f" in netns {args.netns}" if args.netns else ""
            _announce(
                f"anp run: stack {args.ip} mac {host.mac} up on tap {args.tap}{where}, "
                f"{args.queues} queues (worker pids {', '.join(map(str, host.pids()))}), "
                f"kernel side {args.peer}, mode {cfg.mode}, program sockets via {lib}"
            )
            code = await run_child(
                program_argv(words, args.isolate), program_env(lib, api_path, args.isolate)
            )
            _announce(await _workers_summary(cfg.control))
        finally:
            await host.close()
    finally:
        if ns is not None:
            ns.delete()
    return code


async def _workers_summary(path: str | None) -> str:
    """One line: each worker's TCP opens (from the host's control socket)."""
    if path is None:
        return "anp run: stack down"
    try:
        answer = await asyncio.to_thread(control.call, path, {"cmd": "stats"})
    except (OSError, ValueError) as e:
        return f"anp run: stack down (no stats: {e})"
    if not answer.get("ok"):
        return f"anp run: stack down (no stats: {answer.get('error', 'a worker did not answer')})"
    stats = answer["stats"]
    parts = []
    for i, w in sorted(stats.get("workers", {}).items(), key=lambda kv: int(kv[0])):
        tcp, udp = (w or {}).get("tcp", {}), (w or {}).get("udp", {})
        parts.append(
            f"worker {i} active_opens={tcp.get('active_opens', 0)} "
            f"passive_opens={tcp.get('passive_opens', 0)} "
            f"udp_rx={udp.get('rx_datagrams', 0)}"
        )
    return f"anp run: stack down ({'; '.join(parts)})"


async def run_attached(args: argparse.Namespace, words: list[str]) -> int:
    """Run the program on the stack that ``anp up --tap T`` already serves."""
    lib = find_library()
    api_path = api_socket_path(args.tap)
    if not control.serving(control.socket_path(args.tap)):
        raise RunError(f"no stack runs on TAP {args.tap} (start one with anp up --tap {args.tap})")
    if not os.path.exists(api_path):
        raise RunError(f"the stack on TAP {args.tap} serves no socket API ({api_path})")
    return await run_child(
        program_argv(words, args.isolate), program_env(lib, api_path, args.isolate)
    )


def _announce(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


COMMAND = register_command(
    Command(
        "run",
        "run an unmodified program (C, curl, nc, Python) with its sockets on the stack",
        _configure,
        cmd_run,
        stack_options=True,
    )
)
