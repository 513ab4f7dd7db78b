"""Rates from two ``Stack.stats()`` snapshots: what ``anp stats --interval`` and ``anp top``
print (like ``nstat`` and ``ethtool -S`` read twice).

:func:`flatten` gives every numeric counter a dotted name (``tcp.rx_segments``,
``mode.wakeups``); :func:`deltas` subtracts two flattened snapshots; :func:`mode_rates`
computes the receive-mode figures ``anp top`` shows (wake-ups/s, frames/s, frames per
batch, CPU share) from the counters summed over every mode, so a mode switch between the
two snapshots does not make a rate negative.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Counters that are not "how many times did X happen" (no rate makes sense for them).
GAUGES = frozenset({"tcp.open_connections", "udp.endpoints", "arp.entries", "mode.params"})
#: Words that mark a counter as a dropped or refused packet (for the ``drops`` column).
DROP_WORDS = ("drop", "bad", "invalid", "error", "fail", "unknown", "short", "checksum",
              "truncated", "malformed", "too_", "unmatched", "suppressed")  # fmt: skip
#: Counters whose names contain a drop word but count no dropped packet.
NOT_DROPS = frozenset({"mode.deliver_errors"})


def flatten(stats: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of ``stats`` under its dotted path (lists and strings skipped)."""
    out: dict[str, float] = {}
    for k, v in stats.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, bool):
            out[key] = int(v)
        elif isinstance(v, int | float):
            out[key] = v
    return out


def is_drop(name: str) -> bool:
    """Does the counter ``name`` count dropped or refused packets?"""
    if name in NOT_DROPS or name.startswith(("mode.", "offload.")):
        return False
    leaf = name.rsplit(".", 1)[-1]
    return any(w in leaf for w in DROP_WORDS)


def is_gauge(name: str) -> bool:
    """Is ``name`` a level (connections open, a queue's length) rather than a count?"""
    return name in GAUGES or name.startswith(("mode.params", "tcp.listen_queues."))


def deltas(prev: dict[str, float], cur: dict[str, float]) -> dict[str, float]:
    """``cur - prev`` for every counter of ``cur`` (gauges keep their current value);
    a counter that went down (the stack restarted, a mode switched) counts from zero."""
    out: dict[str, float] = {}
    for k, v in cur.items():
        if is_gauge(k):
            out[k] = v
            continue
        p = prev.get(k, 0)
        out[k] = v - p if v >= p else v
    return out


def _mode_totals(stats: dict[str, Any]) -> dict[str, float]:
    """The receive-mode counters summed over every mode the stack ran."""
    mode = stats.get("mode") or {}
    totals = mode.get("totals_all_modes") or {}
    if totals:
        return {k: float(v) for k, v in totals.items()}
    return {k: float(v) for k, v in mode.items() if isinstance(v, int | float)}


@dataclass
class ModeRates:
    """One interval of a running stack, as ``anp top`` shows it."""

    mode: str
    params: str
    seconds: float
    wakeups_s: float
    interrupts_s: float
    poll_rounds_s: float
    empty_polls_s: float
    frames_s: float
    frames_per_batch: float
    cpu_pct: float
    rx_frames_s: float
    tx_frames_s: float
    rx_mbit_s: float
    tx_mbit_s: float
    drops_s: float
    drops: dict[str, float]
    connections: int
    listeners: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mode_rates(prev: dict[str, Any], cur: dict[str, Any], dt: float) -> ModeRates:
    """The figures of the interval ``dt`` seconds between snapshots ``prev`` and ``cur``."""
    dt = dt if dt > 0 else 1e-9
    m0, m1 = _mode_totals(prev), _mode_totals(cur)

    def d(k: str) -> float:
        a, b = m0.get(k, 0.0), m1.get(k, 0.0)
        return b - a if b >= a else b

    f0, f1 = flatten(prev), flatten(cur)
    dl = deltas(f0, f1)
    drops = {k: v for k, v in dl.items() if is_drop(k) and v > 0}
    mode = cur.get("mode") or {}
    params = ",".join(f"{k}={v}" for k, v in (mode.get("params") or {}).items())
    batches = d("batches")
    tcp = cur.get("tcp") or {}
    return ModeRates(
        mode=str(mode.get("name", "?")),
        params=params,
        seconds=dt,
        wakeups_s=d("wakeups") / dt,
        interrupts_s=d("interrupts") / dt,
        poll_rounds_s=d("poll_rounds") / dt,
        empty_polls_s=d("empty_polls") / dt,
        frames_s=d("frames") / dt,
        frames_per_batch=d("frames") / batches if batches else 0.0,
        cpu_pct=100.0 * d("cpu_seconds") / dt,
        rx_frames_s=dl.get("nic.rx_frames", 0.0) / dt,
        tx_frames_s=dl.get("nic.tx_frames", 0.0) / dt,
        rx_mbit_s=dl.get("nic.rx_bytes", 0.0) * 8 / 1e6 / dt,
        tx_mbit_s=dl.get("nic.tx_bytes", 0.0) * 8 / 1e6 / dt,
        drops_s=sum(drops.values()) / dt,
        drops=drops,
        connections=int(tcp.get("open_connections", 0)),
        listeners=len(tcp.get("listeners") or []),
    )
