"""``anp ss``: the sockets of a running stack, like ``ss -tuni`` for the kernel's."""

from __future__ import annotations

import argparse
import json
import shutil

from ..obs.ss import FilterError, format_rows, parse_filter, sockets
from .base import CliError, Command
from .ctl import _ctl_call


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tap", help="TAP of the running stack (default anptap0)")
    p.add_argument("--socket", metavar="PATH", help="control socket path")
    p.add_argument("-i", "--info", action="store_true", help="TCP internals (cwnd, rtt, rto ...)")
    p.add_argument("-t", "--tcp", action="store_true", help="TCP sockets only")
    p.add_argument("-u", "--udp", action="store_true", help="UDP sockets only")
    p.add_argument("-l", "--listening", action="store_true", help="listening sockets only")
    p.add_argument("-a", "--all", action="store_true", help="listening and connected sockets")
    p.add_argument("--json", action="store_true", help="one JSON array of socket objects")
    p.add_argument(
        "filter",
        nargs="*",
        help="ss-style filter: state established|time-wait|connected..., sport|dport OP :PORT, "
        "src|dst ADDR[:PORT] (e.g. `state established dport = :80`)",
    )


def cmd_ss(args: argparse.Namespace) -> int:
    """``anp ss``: list the stack's sockets."""
    try:
        pred = parse_filter(args.filter)
    except FilterError as e:
        raise CliError(f"bad filter: {e}") from None
    stats = _ctl_call(args, {"cmd": "stats"})["stats"]
    rows = [r for r in sockets(stats) if pred(r)]
    if args.tcp != args.udp:  # one of them given
        rows = [r for r in rows if r["proto"] == ("tcp" if args.tcp else "udp")]
    if args.listening:
        rows = [r for r in rows if r["state"] in ("LISTEN", "UNCONN")]
    elif not args.all and not any(w.lower() in ("state", "exclude") for w in args.filter):
        # ss's default: connected sockets only.
        rows = [r for r in rows if r["state"] not in ("LISTEN", "UNCONN")]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(format_rows(rows, info=args.info, width=shutil.get_terminal_size((100, 24)).columns))
    return 0


COMMAND = Command("ss", "list a running stack's sockets (like ss -tni)", _configure, cmd_ss)
