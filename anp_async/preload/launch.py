"""Starting a program with the preload library: its argv and environment, the socket
API's path for a TAP, and waiting for it with SIGINT/SIGTERM passed on.

The program runs as a child process with ``libanp_preload.so`` in ``LD_PRELOAD`` and the
socket-API server's path in ``ANP_SOCKET``. ``--isolate`` puts :mod:`.isolate` in front of
it, so it starts in an empty network namespace. The exit status is the program's (128 + N
when signal N ended it). ``anp run`` (:mod:`anp_async.cli.run`) is the command around this.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys

from .. import control
from .build import BuildError, library_path

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
