"""``anp trace``: attach to a running stack and print one line per decision on each frame.

    anp trace --tap T [--count N] [--filter EXPR] [--json]

Like ``tcpdump -n`` for the inside of the stack (see :mod:`anp_async.obs.trace` for what
a line says). Commands that run a stack of their own take ``--trace [EXPR]`` instead and
print the same lines on stderr.
"""

from __future__ import annotations

import argparse
import sys

from .. import control
from ..obs.trace import format_json, format_record
from .base import CliError, Command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tap", help="TAP of the running stack (default anptap0)")
    p.add_argument("--socket", metavar="PATH", help="control socket path")
    p.add_argument("-c", "--count", type=int, help="stop after N frames (default: Ctrl-C)")
    p.add_argument(
        "--filter",
        metavar="EXPR",
        help="frames to show: arp ip icmp udp tcp, host A, port N, drop, rx, tx; "
        "not, and, or (e.g. 'tcp and port 80 or icmp')",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def cmd_trace(args: argparse.Namespace) -> int:
    """``anp trace``: stream a running stack's trace."""
    if args.count is not None and args.count < 1:
        raise CliError("--count must be at least 1")
    tap = args.tap or "anptap0"
    path = args.socket or control.socket_path(tap)
    fmt = format_json if args.json else format_record
    try:
        for rec in control.trace_stream(path, count=args.count, filter=args.filter):
            print(fmt(rec), flush=True)
    except control.NoStackError:
        raise CliError(f"no stack runs on TAP {tap} (no control socket at {path})") from None
    except ValueError as e:
        raise CliError(f"the stack refused: {e}") from None
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    return 0


COMMAND = Command(
    "trace", "print every decision a running stack takes on each frame", _configure, cmd_trace
)
