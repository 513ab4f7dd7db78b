"""``anp top``: a live view of a running stack, and ``anp stats --interval``'s deltas.

``anp top --tap T`` asks the stack for its counters every second (``--interval``) and shows
the receive mode at work: wake-ups/s, interrupts and poll rounds/s, frames/s, frames per
batch, the mode's CPU share, NIC traffic, drops and connections; a second table keeps one
row per receive mode seen while watching (switch modes with ``anp ctl`` and compare).
``--json`` prints one object per interval instead (no terminal needed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..obs.rates import ModeRates, deltas, flatten, is_gauge, mode_rates
from .base import CliError, Command
from .ctl import _ctl_call


def _interval(text: str) -> float:
    v = float(text)
    if not 0.05 <= v <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is outside 0.05..3600 seconds")
    return v


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tap", help="TAP of the running stack (default anptap0)")
    p.add_argument("--socket", metavar="PATH", help="control socket path")
    p.add_argument("--interval", type=_interval, default=1.0, help="seconds between updates")
    p.add_argument("--count", type=int, help="stop after COUNT updates (default: until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="one JSON object per update, no screen")


def _fetch(args: argparse.Namespace) -> tuple[float, dict[str, Any]]:
    return time.monotonic(), _ctl_call(args, {"cmd": "stats"})["stats"]


def _fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _render(r: ModeRates, per_mode: dict[str, ModeRates], tap: str) -> Any:
    from rich.console import Group
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]anp top[/] tap {tap}",
        f"mode [bold]{r.mode}[/]" + (f" ({r.params})" if r.params else ""),
        f"conns {r.connections}  listeners {r.listeners}",
    )
    t = Table(title="receive path, per second", title_justify="left")
    for col in ("wake-ups", "interrupts", "poll rounds", "empty polls", "frames",
                "frames/batch", "CPU %", "NIC rx fr", "NIC tx fr", "rx Mbit", "tx Mbit",
                "drops"):  # fmt: skip
        t.add_column(col, justify="right")
    t.add_row(
        *map(
            _fmt,
            (
                r.wakeups_s,
                r.interrupts_s,
                r.poll_rounds_s,
                r.empty_polls_s,
                r.frames_s,
                r.frames_per_batch,
                r.cpu_pct,
                r.rx_frames_s,
                r.tx_frames_s,
                r.rx_mbit_s,
                r.tx_mbit_s,
                r.drops_s,
            ),
        )  # fmt: skip
    )
    pm = Table(title="per receive mode (last interval each ran)", title_justify="left")
    for col in ("mode", "params", "wake-ups/s", "frames/s", "frames/batch", "CPU %", "drops/s"):
        pm.add_column(col, justify="left" if col in ("mode", "params") else "right")
    for m in per_mode.values():
        pm.add_row(m.mode, m.params, _fmt(m.wakeups_s), _fmt(m.frames_s),
                   _fmt(m.frames_per_batch), _fmt(m.cpu_pct), _fmt(m.drops_s))  # fmt: skip
    parts: list[Any] = [head, t, pm]
    if r.drops:
        dt = Table(title="drops in this interval", title_justify="left")
        dt.add_column("counter")
        dt.add_column("count", justify="right")
        for k, v in sorted(r.drops.items(), key=lambda kv: -kv[1])[:8]:
            dt.add_row(k, f"{v:.0f}")
        parts.append(dt)
    return Group(*parts)


def cmd_top(args: argparse.Namespace) -> int:
    """``anp top``: live per-second figures of a running stack."""
    tap = args.tap or "anptap0"
    t0, prev = _fetch(args)
    per_mode: dict[str, ModeRates] = {}
    n = 0

    def step() -> ModeRates:
        nonlocal t0, prev
        time.sleep(max(0.0, t0 + args.interval - time.monotonic()))
        t1, cur = _fetch(args)
        r = mode_rates(prev, cur, t1 - t0)
        t0, prev = t1, cur
        per_mode[f"{r.mode} {r.params}"] = r
        return r

    try:
        if args.json or not sys.stdout.isatty():
            while args.count is None or n < args.count:
                r = step()
                n += 1
                print(json.dumps({"t": round(time.time(), 3), **r.as_dict()}), flush=True)
            return 0
        from rich.live import Live

        with Live(_render(step(), per_mode, tap), refresh_per_second=4, screen=False) as live:
            n = 1
            while args.count is None or n < args.count:
                live.update(_render(step(), per_mode, tap))
                n += 1
    except KeyboardInterrupt:
        return 0
    return 0


COMMAND = Command("top", "live view of a running stack's receive path", _configure, cmd_top)


# -- anp stats --interval ------------------------------------------------------------------


def stats_interval(args: argparse.Namespace) -> int:
    """``anp stats --interval S``: every S seconds, the counters that changed (like nstat)."""
    if args.interval <= 0:
        raise CliError("--interval must be positive")
    t0, prev_stats = _fetch(args)
    prev = flatten(prev_stats)
    n = 0
    try:
        while args.count is None or n < args.count:
            time.sleep(max(0.0, t0 + args.interval - time.monotonic()))
            t1, cur_stats = _fetch(args)
            cur = flatten(cur_stats)
            dt = t1 - t0
            changed = {
                k: v for k, v in deltas(prev, cur).items()
                if not k.startswith("mode.params")
                and (cur[k] != prev.get(k) if is_gauge(k) else v != 0)
            }  # fmt: skip
            mode = cur_stats.get("mode", {}).get("name", "?")
            if args.json:
                rates = {k: v / dt for k, v in changed.items()}
                print(json.dumps({"t": round(time.time(), 3), "interval": round(dt, 4),
                                  "mode": mode, "deltas": changed, "rates": rates}),
                      flush=True)  # fmt: skip
            else:
                print(f"# {time.strftime('%H:%M:%S')}  interval {dt:.2f} s  mode {mode}")
                width = max((len(k) for k in changed), default=10)
                for k, v in sorted(changed.items()):
                    vs = f"{v:.6f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)
                    print(f"{k:<{width}}  {vs:>14}  {v / dt:>14.1f}/s")
                print(flush=True)
            t0, prev = t1, cur
            n += 1
    except KeyboardInterrupt:
        return 0
    return 0
