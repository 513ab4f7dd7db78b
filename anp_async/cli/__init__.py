"""The ``anp`` command: bring a stack up on a TAP, ping from it, talk to it, demo it.

Commands (``anp COMMAND --help`` for each)::

    anp up [--echo PORT] [--http PORT] run a stack until SIGINT/SIGTERM        (up.py)
    anp ctl --tap TAP mode [NAME]     show or switch the receive mode           (ctl.py)
    anp ctl --tap TAP coalesce ...    ethtool -C style coalescing change
    anp ctl --tap TAP stats [--json]  counters of a running stack (= anp stats)
    anp stats --interval S            the counters that changed, every S seconds (top.py)
    anp ss --tap TAP [-i] [FILTER]    its sockets, like ss -tni                 (ss.py)
    anp top --tap TAP                 live wake-ups/frames/CPU per mode         (top.py)
    anp trace --tap TAP [--count N]   every decision on each frame, like tcpdump (trace.py)
    anp ping HOST [-c N]              ICMP echo from the stack, like ping(8)    (ping.py)
    anp echo-server PORT              the reference application's server        (echo.py)
    anp echo-client HOST PORT ...     its client: patterned buffers, checked echoes
    anp demo                          kernel arping/ping against the stack      (demo.py)
    anp bench ...                     the benchmark runner        (anp_async/bench/cli.py)
    anp run ... -- PROGRAM            an unmodified program on the stack          (run.py)

One module per command. Every command that runs a stack takes the same options
(:func:`add_stack_options` in options.py) and opens the stack with
:func:`open_stack_from_args`. Each module defines its :class:`Command`; this file registers them
(:func:`register_command`, base.py); modules outside this package register their own and
are listed in ``main.EXTRA_COMMAND_MODULES``.

Errors a user can cause (no permission, namespace exists, no stack on the TAP, address in
use) print one sentence to stderr and exit with status 2; anything else is a bug and
shows its traceback.
"""

from __future__ import annotations

from . import ctl, demo, echo, ping, ss, top, trace, up
from .base import CliError, Command, register_command
from .ctl import print_stats
from .main import EXTRA_COMMAND_MODULES, build_parser, main
from .options import (
    MODES,
    _check_stack_args,
    add_stack_options,
    mode_from_args,
    open_stack_from_args,
    parse_size,
)
from .ping import ping_summary
from .serving import ConnectionHandlers

# The built-in commands, in the order `anp --help` lists them; other modules register
# theirs when main.build_parser imports them (EXTRA_COMMAND_MODULES).
for _cmd in (
    up.COMMAND,
    ctl.CTL_COMMAND,
    ctl.STATS_COMMAND,
    ss.COMMAND,
    top.COMMAND,
    trace.COMMAND,
    ping.COMMAND,
    echo.SERVER_COMMAND,
    echo.CLIENT_COMMAND,
    demo.COMMAND,
):
    register_command(_cmd)

__all__ = [
    "EXTRA_COMMAND_MODULES",
    "MODES",
    "CliError",
    "Command",
    "ConnectionHandlers",
    "_check_stack_args",
    "add_stack_options",
    "build_parser",
    "main",
    "mode_from_args",
    "open_stack_from_args",
    "parse_size",
    "ping_summary",
    "print_stats",
    "register_command",
]
