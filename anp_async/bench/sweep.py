"""Benchmarks made for experiments: parameter sweeps, repeated runs and honest percentiles.

- ``--sweep rx-usecs=0,10,50,200`` turns one receive-mode knob into the experiment's
  variable: every value is a setup of its own (``coalesce rx_usecs=10``), run on a fresh
  stack, with the other knobs at their defaults or ``--set KNOB=V``.
- ``--repeat N`` runs every setup N times (a fresh stack process each time, runs
  interleaved so drift spreads over all setups); the summary is the median of the runs
  and carries the spread between them (``*_min``, ``*_max``, ``*_spread_pct``).
- :func:`tail_warnings`: a p99 over 200 samples rests on 2 samples beyond it; such a
  percentile is marked, not silently reported.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from typing import Any

#: Which receive mode each knob belongs to (the ``anp`` option spelling).
KNOBS = {
    "rx-usecs": "coalesce",
    "rx-frames": "coalesce",
    "budget": "poll",
    "weight": "adaptive",
    "busy-poll-usecs": "adaptive",
}
#: Fewest samples that must lie beyond a percentile for it to be reported without a warning.
MIN_TAIL_SAMPLES = 10


@dataclass(frozen=True)
class Setup:
    """One stack configuration under test: a label for tables, the mode and its parameters."""

    label: str
    mode: str
    params: dict[str, int] = field(default_factory=dict, hash=False)
    knob: str | None = None
    value: int | None = None


def parse_knob_list(text: str) -> tuple[str, list[int]]:
    """``rx-usecs=0,10,50`` -> ("rx-usecs", [0, 10, 50]) (argparse type)."""
    name, sep, vals = text.partition("=")
    name = name.strip().replace("_", "-")
    if not sep or name not in KNOBS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give KNOB=V1,V2,... with KNOB one of {', '.join(KNOBS)}"
        )
    try:
        values = [int(v) for v in vals.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the values must be integers") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more non-negative integers")
    return name, list(dict.fromkeys(values))


def parse_knob(text: str) -> tuple[str, int]:
    """``rx-frames=32`` -> ("rx-frames", 32) (argparse type of ``--set``)."""
    name, values = parse_knob_list(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: --set takes one value")
    return name, values[0]


def stack_setups(args: Any) -> list[Setup]:
    """The stack setups a run measures: one per mode, or one per value of ``--sweep``."""
    sweep = getattr(args, "sweep", None)
    fixed = dict(getattr(args, "set", None) or [])
    if sweep is None:
        if fixed:
            raise ValueError("--set needs --sweep (it fixes the other knobs of the swept mode)")
        return [Setup(m, m) for m in args.modes]
    knob, values = sweep
    mode = KNOBS[knob]
    wrong = [k for k in fixed if KNOBS[k] != mode]
    if wrong:
        raise ValueError(f"--set {', '.join(wrong)} does not apply to {mode} (swept by {knob})")
    if knob in fixed:
        raise ValueError(f"--set {knob} conflicts with --sweep {knob}")
    from ..modes import make_mode

    out = []
    for v in values:
        params = {k.replace("-", "_"): x for k, x in {**fixed, knob: v}.items()}
        make_mode(mode, **params)  # refuse a value the mode rejects before anything runs
        out.append(Setup(f"{mode} {knob.replace('-', '_')}={v}", mode, params, knob, v))
    return out


def tail_warnings(row: dict[str, Any], percentiles: tuple[float, ...] = (99.0, 99.9)) -> list[str]:
    """Percentiles of ``row`` that rest on fewer than :data:`MIN_TAIL_SAMPLES` samples."""
    n = row.get("count", 0) or 0
    out = []
    for p in percentiles:
        beyond = n * (100.0 - p) / 100.0
        if beyond < MIN_TAIL_SAMPLES:
            out.append(
                f"p{p:g} rests on {beyond:.1f} sample(s) beyond it (count {n}); "
                f"use --count {int(MIN_TAIL_SAMPLES * 100 / (100 - p))} or more"
            )
    return out


def aggregate(
    runs: list[list[dict]], keys: tuple[str, ...], metrics: tuple[str, ...]
) -> list[dict]:
    """Merge the summaries of repeated runs: the median of each metric, its min and max, and
    the spread ``(max - min) / median`` in percent. Rows match by ``keys``; a single run
    passes through with ``runs: 1``."""
    by_key: dict[tuple, list[dict]] = {}
    order: list[tuple] = []
    for rows in runs:
        for r in rows:
            k = tuple(r[x] for x in keys)
            if k not in by_key:
                by_key[k] = []
                order.append(k)
            by_key[k].append(r)
    out = []
    for k in order:
        rs = by_key[k]
        merged = dict(rs[-1])
        merged["runs"] = len(rs)
        if len(rs) > 1:
            for m in metrics:
                vals = [r[m] for r in rs if isinstance(r.get(m), int | float)]
                if not vals:
                    continue
                med = statistics.median(vals)
                merged[m] = med
                merged[f"{m}_min"] = min(vals)
                merged[f"{m}_max"] = max(vals)
                merged[f"{m}_spread_pct"] = 100.0 * (max(vals) - min(vals)) / med if med else 0.0
            if "count" in merged:
                merged["count"] = sum(r.get("count", 0) for r in rs) // len(rs)
        out.append(merged)
    return out
