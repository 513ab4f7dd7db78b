"""``anp run -- PROGRAM``: any dynamically linked program, with its sockets on the stack.

The program runs as a child process with ``libanp_preload.so`` in ``LD_PRELOAD`` and the
socket-API server's path in ``ANP_SOCKET``; the stack and that server run here, in the anp
process. Either this command brings a stack up for the program (the stack options, as for
``anp up``), or, with ``--attach``, the program uses the stack a running ``anp up --tap T``
serves (several programs then share it). ``--isolate`` starts the program in an empty
network namespace so that anything the library does not take fails instead of reaching the
host's interfaces. The exit status is the program's (128 + N when signal N ended it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys

from .. import control
from .build import BuildError, library_path
from .server import serve_socket_api

_PYTHON_NAME = re.compile(r"python(\d+(\.\d+)*)?")

#: How long the program gets to exit after the signal anp forwarded before it is killed.
KILL_AFTER = 5.0


class RunError(Exception):
    """One sentence for the user (``anp run`` exits 2 with it)."""


def api_socket_path(tap: str, run_dir: str = control.RUN_DIR) -> str:
    """Where the stack on ``tap`` serves the socket API (``anp run --attach`` looks here)."""
    return control.socket_path(tap, run_dir)[: -len(".sock")] + ".api.sock"


def program_argv(words: list[str], isolate: bool) -> list[str]:
    """The child's argv: a bare ``python``/``python3`` is anp's own interpreter (so the
    program sees the packages anp sees), behind the isolation helper with ``--isolate``."""
    argv = list(words)
    if argv and _PYTHON_NAME.fullmatch(argv[0]):
        argv[0] = sys.executable
    if isolate:
        argv = [sys.executable, "-m", "anp_async.preload.isolate", "--", *argv]
    return argv


def program_env(lib: str, api_path: str, isolate: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["ANP_SOCKET"] = api_path
    if isolate:
        env["ANP_PRELOAD_LIB"] = lib  # the helper preloads it for the program only
    else:
        old = env.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = f"{lib}:{old}" if old else lib
    return env


def find_library() -> str:
    try:
        return library_path()
    except BuildError as e:
        raise RunError(f"the preload library is not built and cannot be built: {e}") from None


async def run_child(argv: list[str], env: dict[str, str]) -> int:
    """Start the program, forward SIGINT/SIGTERM to it, and return its exit status."""
    try:
        proc = await asyncio.create_subprocess_exec(*argv, env=env)
    except FileNotFoundError:
        print(f"anp run: {argv[0]}: command not found", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"anp run: {argv[0]}: permission denied", file=sys.stderr)
        return 126
    loop = asyncio.get_running_loop()

    def forward(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
        loop.call_later(KILL_AFTER, _kill, proc)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, forward, sig)
    try:
        code = await proc.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 128 - code if code < 0 else code


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


async def run_with_stack(args: argparse.Namespace, words: list[str]) -> int:
    """Bring the stack up from the options, serve the program, take the stack down."""
    from ..cli.options import open_stack_from_args
    from ..cli.serving import control_server

    lib = find_library()
    api_path = api_socket_path(args.tap)
    if control.serving(control.socket_path(args.tap)):
        raise RunError(f"a stack already runs on TAP {args.tap} (use --attach to share it)")
    args.socket = None
    async with open_stack_from_args(args) as stack, control_server(stack, args):
        async with serve_socket_api(stack, api_path) as api:
            where = f" in netns {args.netns}" if args.netns else ""
            params = ",".join(f"{k}={v}" for k, v in stack.mode_params.items())
            print(
                f"anp run: stack {args.ip} mac {stack.mac} up on tap {args.tap}{where}, "
                f"kernel side {args.peer}, mode {stack.mode_name}"
                f"{'(' + params + ')' if params else ''}, program sockets via {lib}",
                file=sys.stderr,
                flush=True,
            )
            code = await run_child(program_argv(words, args.isolate), program_env(lib, api_path, args.isolate))
            api_stats = api.stats()
        stats = stack.stats().get("tcp", {})
        print(
            f"anp run: stack down (tcp active_opens={stats.get('active_opens', 0)} "
            f"passive_opens={stats.get('passive_opens', 0)} "
            f"rx_segments={stats.get('rx_segments', 0)} tx_segments={stats.get('tx_segments', 0)}; "
            f"sockets api connects={api_stats.get('connects', 0)} "
            f"accepted={api_stats.get('accepted', 0)})",
            file=sys.stderr,
            flush=True,
        )
    return code


async def run_attached(args: argparse.Namespace, words: list[str]) -> int:
    """Run the program on the stack that ``anp up --tap T`` already serves."""
    lib = find_library()
    api_path = api_socket_path(args.tap)
    if not control.serving(control.socket_path(args.tap)) or not os.path.exists(api_path):
        raise RunError(f"no stack runs on TAP {args.tap} (start one with anp up --tap {args.tap})")
    return await run_child(program_argv(words, args.isolate), program_env(lib, api_path, args.isolate))
