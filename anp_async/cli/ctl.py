"""``anp ctl`` and ``anp stats``: talk to a running stack through its control socket."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import control
from .base import CliError, Command
from .options import KNOB_MODE, MODES, not_for_mode, positive_int


def _configure_ctl(p: argparse.ArgumentParser) -> None:
    def common(q: argparse.ArgumentParser, top: bool) -> None:
        kw: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
        q.add_argument("--tap", help="TAP of the running stack (default anptap0)", **kw)
        q.add_argument("--socket", metavar="PATH", help="control socket path", **kw)

    common(p, True)
    sub = p.add_subparsers(dest="ctl_cmd", metavar="{mode,coalesce,stats,info}", required=True)
    m = sub.add_parser("mode", help="show the receive mode, or switch it")
    common(m, False)
    m.add_argument("mode", nargs="?", choices=MODES, help="switch to this mode")
    for opt, hlp in (
        ("--rx-frames", "coalesce: frames per batch"),
        ("--rx-usecs", "coalesce: max wait (us)"),
        ("--budget", "poll: frames per round"),
        ("--weight", "adaptive: NAPI weight"),
        ("--busy-poll-usecs", "adaptive: busy-poll window (us)"),
    ):
        m.add_argument(opt, type=positive_int, help=hlp)
    c = sub.add_parser(
        "coalesce", help="switch to coalesce mode with these parameters (ethtool -C)"
    )
    common(c, False)
    c.add_argument("--rx-frames", type=positive_int, help="frames per batch")
    c.add_argument("--rx-usecs", type=positive_int, help="max wait for a batch (us)")
    s = sub.add_parser("stats", help="print the stack's counters")
    common(s, False)
    s.add_argument("--json", action="store_true", help="print the raw JSON")
    i = sub.add_parser("info", help="what runs on this TAP (pid, addresses, mode)")
    common(i, False)


def _ctl_call(args: argparse.Namespace, req: dict[str, Any]) -> dict[str, Any]:
    tap = args.tap or "anptap0"
    path = args.socket or control.socket_path(tap)
    try:
        resp = control.call(path, req)
    except control.NoStackError:
        raise CliError(f"no stack runs on TAP {tap} (no control socket at {path})") from None
    except PermissionError:
        raise CliError(f"no permission to use the control socket {path}") from None
    except TimeoutError as e:
        raise CliError(str(e)) from None
    if not resp.get("ok"):
        raise CliError(f"the stack refused: {resp.get('error', 'no reason given')}")
    return resp


def _fmt_mode(resp: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in (resp.get("params") or {}).items())
    return f"mode {resp['mode']}" + (f" ({params})" if params else "")


def cmd_ctl(args: argparse.Namespace) -> int:
    """``anp ctl``: talk to a running stack through its control socket."""
    if args.ctl_cmd == "mode":
        knobs = {k: getattr(args, k) for k in KNOB_MODE if getattr(args, k) is not None}
        if args.mode is None:
            if knobs:
                raise CliError("give the mode to switch to, e.g. `anp ctl mode poll --budget 32`")
            print(_fmt_mode(_ctl_call(args, {"cmd": "mode"})))
            return 0
        wrong = sorted(k for k in knobs if KNOB_MODE[k] != args.mode)
        if wrong:
            raise CliError(not_for_mode(wrong, f"mode {args.mode}"))
        resp = _ctl_call(args, {"cmd": "set_mode", "mode": args.mode, "params": knobs})
        print(_fmt_mode(resp))
        return 0
    if args.ctl_cmd == "coalesce":
        knobs = {
            k: getattr(args, k) for k in ("rx_frames", "rx_usecs") if getattr(args, k) is not None
        }
        print(_fmt_mode(_ctl_call(args, {"cmd": "coalesce", "params": knobs})))
        return 0
    if args.ctl_cmd == "stats":
        stats = _ctl_call(args, {"cmd": "stats"})["stats"]
        if args.json:
            print(json.dumps(stats, indent=2, sort_keys=False))
        else:
            print_stats(stats)
        return 0
    if args.ctl_cmd == "info":
        info = _ctl_call(args, {"cmd": "info"})["info"]
        for k, v in info.items():
            print(f"{k}: {v}")
        return 0
    raise CliError(f"unknown ctl command {args.ctl_cmd}")


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.extend(_flatten(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out.append((prefix + k, v))
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6f}".rstrip("0").rstrip(".") if v else "0"
    return str(v)


def print_stats(stats: dict[str, Any], console: Any = None) -> None:
    """Render ``stack.stats()`` as rich tables: NIC, mode, per-layer counters, TCP sockets."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    mode = dict(stats.get("mode") or {})
    params = mode.pop("params", {}) or {}
    name = mode.pop("name", "?")
    totals = mode.pop("totals_all_modes", {}) or {}
    if "address" in stats:
        console.print(f"stack {stats.get('address')}  mac {stats.get('mac', '?')}")

    nic = Table(title="NIC", title_justify="left")
    nic.add_column("counter")
    nic.add_column("value", justify="right")
    for k, v in _flatten(stats.get("nic") or {}):
        nic.add_row(k, _fmt_value(v))
    console.print(nic)

    pdesc = ", ".join(f"{k}={v}" for k, v in params.items())
    mt = Table(
        title=f"receive mode: {name}" + (f" ({pdesc})" if pdesc else ""), title_justify="left"
    )
    mt.add_column("counter")
    mt.add_column("this mode", justify="right")
    mt.add_column("all modes", justify="right")
    for k, v in _flatten(mode):
        mt.add_row(k, _fmt_value(v), _fmt_value(totals.get(k, v)))
    console.print(mt)

    lt = Table(title="protocol counters", title_justify="left")
    lt.add_column("layer")
    lt.add_column("counter")
    lt.add_column("value", justify="right")
    for layer in ("eth", "arp", "ip", "icmp", "udp", "tcp"):
        rows = _flatten(stats.get(layer) or {})
        for i, (k, v) in enumerate(rows):
            lt.add_row(layer if i == 0 else "", k, _fmt_value(v))
        if rows:
            lt.add_section()
    console.print(lt)

    conns = (stats.get("tcp") or {}).get("connections") or []
    if conns:
        cols: list[str] = []
        for c in conns:
            for k in c:
                if k not in cols:
                    cols.append(k)
        ct = Table(title=f"TCP connections ({len(conns)})", title_justify="left")
        for col in cols:
            ct.add_column(
                col, justify="right" if isinstance(conns[0].get(col), int | float) else "left"
            )
        for c in conns:
            ct.add_row(*(_fmt_value(c.get(col, "")) for col in cols))
        console.print(ct)
    else:
        console.print("TCP connections: none")


CTL_COMMAND = Command(
    "ctl", "talk to a running stack (mode, coalesce, stats)", _configure_ctl, cmd_ctl
)


def _configure_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tap", help="TAP of the running stack (default anptap0)")
    p.add_argument("--socket", metavar="PATH", help="control socket path")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.add_argument(
        "--interval", type=float, metavar="S", help="every S seconds, the counters that changed"
    )
    p.add_argument("--count", type=int, help="with --interval: stop after COUNT reports")


def cmd_stats(args: argparse.Namespace) -> int:
    """``anp stats``: short for ``anp ctl stats`` (the name the design gives it);
    ``--interval S`` prints deltas every S seconds (:func:`anp_async.cli.top.stats_interval`)."""
    if args.interval is not None:
        from .top import stats_interval

        return stats_interval(args)
    args.ctl_cmd = "stats"
    return cmd_ctl(args)


STATS_COMMAND = Command(
    "stats", "print a running stack's counters (= anp ctl stats)", _configure_stats, cmd_stats
)
