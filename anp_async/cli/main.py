"""The ``anp`` parser and entry point: builds the parser from the registered commands and
runs the chosen one (coroutine commands on the loop ``--loop`` names)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import inspect
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import NoReturn

from .base import CliError, Command, commands, reason, run_async
from .logs import add_log_options, configure_logging
from .options import add_stack_options

log = logging.getLogger(__name__)

#: Modules that register extra commands when imported (e.g. the benchmark's ``anp bench``).
EXTRA_COMMAND_MODULES: tuple[str, ...] = (
    "anp_async.bench.cli",
    "anp_async.cli.run",
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


class ArgParser(argparse.ArgumentParser):
    """argparse with anp's error format: one line on stderr saying what was wrong, exit
    status 2 (argparse prints its usage block first; ``--help`` still shows it)."""

    def error(self, message: str) -> NoReturn:
        cmd = self.prog.removeprefix("anp").strip()
        where = f"{cmd}: " if cmd else ""
        hint = f" (anp {cmd} --help)" if cmd else " (anp --help)"
        print(f"anp: error: {where}{_one_line(message).rstrip('.')}{hint}.", file=sys.stderr)
        sys.exit(2)


def _one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped (a value the
    user typed may hold them), so an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def build_parser() -> argparse.ArgumentParser:
    """The ``anp`` argument parser with every registered command."""
    for mod in EXTRA_COMMAND_MODULES:
        importlib.import_module(mod)
    parser = ArgParser(prog="anp", description="anp-async: a userspace TCP/IP stack on asyncio")
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
    msg = _one_line(msg).rstrip(".")
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
        where = f" ({e.filename})" if e.filename else ""
        return _error(f"permission denied{where}: {reason(e)}")
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except socket.gaierror as e:
        return _error(f"cannot resolve a host name: {e.strerror or e}")
    except OSError as e:
        # What the system refused (a file, an address, a device, a peer): one line, the
        # traceback only with --log-level debug.
        log.debug("OSError", exc_info=True)
        name = f" ({errno.errorcode[e.errno]})" if e.errno and e.errno in errno.errorcode else ""
        where = f": {e.filename}" if e.filename else ""
        return _error(f"{reason(e)}{where}{name}")
    except ValueError as e:
        # A value the library refused that the command did not check first.
        log.debug("ValueError", exc_info=True)
        return _error(str(e) or "invalid value")
