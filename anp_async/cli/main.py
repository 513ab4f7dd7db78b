"""The ``anp`` parser and entry point: builds the parser from the registered commands and
runs the chosen one (coroutine commands on the loop ``--loop`` names)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import inspect
import os
import sys
from collections.abc import Callable

from .base import CliError, Command, commands, reason, run_async
from .logs import add_log_options, configure_logging
from .options import add_stack_options

#: Modules that register extra commands when imported (e.g. the benchmark's ``anp bench``).
EXTRA_COMMAND_MODULES: tuple[str, ...] = (
    "anp_async.bench.cli",
    "anp_async.runner",
    "anp_async.sim.cli",
)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event-loop factory for ``--loop NAME`` (None: asyncio's default loop)."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise CliError("--loop uvloop needs the uvloop package (pip install uvloop)") from None
        return uvloop.new_event_loop
    return None


def build_parser() -> argparse.ArgumentParser:
    """The ``anp`` argument parser with every registered command."""
    for mod in EXTRA_COMMAND_MODULES:
        importlib.import_module(mod)
    parser = argparse.ArgumentParser(
        prog="anp", description="anp-async: a userspace TCP/IP stack on asyncio"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in commands():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        if cmd.stack_options:
            add_stack_options(p)
        p.set_defaults(_command=cmd)
    add_log_options(parser, top=True)
    return parser


def _error(msg: str) -> int:
    msg = msg.rstrip(".")
    print(f"anp: error: {msg}.", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``anp`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cmd: Command = args._command
    configure_logging(args)
    try:
        if asyncio.iscoroutinefunction(cmd.run):
            factory = loop_factory(getattr(args, "loop", "asyncio"))
            with asyncio.Runner(loop_factory=factory) as runner:
                return runner.run(run_async(cmd, args))
        result = cmd.run(args)
        assert not inspect.isawaitable(result)
        return int(result)
    except CliError as e:
        return _error(str(e))
    except KeyboardInterrupt:
        return 130
    except PermissionError as e:
        return _error(f"permission denied: {reason(e)}")
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:
        if e.errno in (
            errno.EADDRINUSE,
            errno.EBUSY,
            errno.EEXIST,
            errno.ENODEV,
            errno.EHOSTUNREACH,
            errno.EACCES,
            errno.EPERM,
            errno.ENOENT,
        ):
            return _error(reason(e))
        raise
