"""Many seeds on all cores: ``anp sim --seeds 1-1000``, and the soak run.

Each worker process runs whole seeds (``run_seed``) one after another; a seed that takes
more than ``WALL_LIMIT`` seconds of real time is stopped and counted as failed. The
parent prints one line per failing seed as it comes, a progress line on stderr, and
returns the results sorted by seed.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .run import SimResult, run_seed

__all__ = ["Outcome", "parse_seeds", "run_many", "soak"]

#: Real seconds one seed may take in a worker before it counts as hung.
WALL_LIMIT = 120
#: Most seeds one ``--seeds`` range may name.
MAX_SEEDS = 10_000_000


@dataclass(frozen=True)
class Outcome:
    """A seed's result as it crosses the process boundary (no event log)."""

    seed: int
    ok: bool
    line: str
    digest: str
    wall: float
    virtual: float
    totals: dict[str, int]


def parse_seeds(text: str) -> list[int]:
    """``"1-1000"``, ``"7"``, ``"1,5,10-20"`` -> seeds (ValueError with a sentence)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"--seeds: {part!r} is not a seed or a range like 1-1000") from None
        if a < 0 or b < a:
            raise ValueError(f"--seeds: {part!r} must be non-negative and ascending")
        if len(seeds) + (b - a + 1) > MAX_SEEDS:
            raise ValueError(f"--seeds: more than {MAX_SEEDS} seeds")
        seeds.extend(range(a, b + 1))
    return seeds


class _WallLimit(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _WallLimit(f"seed exceeded {WALL_LIMIT} s of real time")


def _one(args: tuple[int, str | None, str | None, float]) -> Outcome:
    seed, scenario, faults, scale = args
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(WALL_LIMIT)
    try:
        r: SimResult = run_seed(seed, scenario, faults, scale=scale)
    except _WallLimit as e:
        return Outcome(seed, False, f"seed={seed} FAIL: {e}", "", float(WALL_LIMIT), 0.0, {})
    finally:
        signal.alarm(0)
    return Outcome(seed, r.ok, r.summary(), r.digest, r.wall_seconds, r.virtual_seconds, r.totals)


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C


def _outcomes(
    work: Iterator[tuple[int, str | None, str | None, float]], jobs: int
) -> Iterator[Outcome]:
    if jobs <= 1:
        for w in work:
            yield _one(w)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs, initializer=_init_worker, maxtasksperchild=200) as pool:
        yield from pool.imap_unordered(_one, work, chunksize=2)


def run_many(
    seeds: list[int],
    scenario: str | None = None,
    faults: str | None = None,
    *,
    jobs: int | None = None,
    on_fail: Callable[[Outcome], None] | None = None,
    progress: bool = True,
) -> list[Outcome]:
    """Run ``seeds`` on ``jobs`` processes (default: every core); results sorted by seed."""
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(seeds) or 1))
    work = ((s, scenario, faults, 1.0) for s in seeds)
    out: list[Outcome] = []
    t0 = time.perf_counter()
    failed = 0
    for o in _outcomes(work, jobs):
        out.append(o)
        if not o.ok:
            failed += 1
            if on_fail is not None:
                on_fail(o)
        if progress and sys.stderr.isatty():
            rate = len(out) / max(1e-9, time.perf_counter() - t0)
            sys.stderr.write(f"\r[{len(out)}/{len(seeds)}] {failed} failing, {rate:.0f} seeds/s  ")
            sys.stderr.flush()
    if progress and sys.stderr.isatty():
        sys.stderr.write("\n")
    out.sort(key=lambda o: o.seed)
    return out


def soak(
    minutes: float, *, first_seed: int = 1_000_000, jobs: int | None = None, scale: float = 4.0
) -> dict[str, Any]:
    """Run seeds (with ``scale`` times the data) until ``minutes`` of real time have passed.

    Seeds go out in small batches so the run stops close to the deadline.
    """
    jobs = max(1, jobs or os.cpu_count() or 1)
    deadline = time.monotonic() + minutes * 60.0
    totals: dict[str, int] = {}
    report: dict[str, Any] = {"seeds": 0, "failed": [], "virtual_seconds": 0.0}
    seed = first_seed
    batch = 2 * jobs
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs, initializer=_init_worker, maxtasksperchild=200) as pool:
        while time.monotonic() < deadline:
            work = [(s, None, None, scale) for s in range(seed, seed + batch)]
            seed += batch
            for o in pool.imap_unordered(_one, work):
                report["seeds"] += 1
                report["virtual_seconds"] += o.virtual
                if not o.ok:
                    report["failed"].append(o.line)
                for k, v in o.totals.items():
                    if k.startswith("peak_"):
                        totals[k] = max(totals.get(k, 0), v)
                    else:
                        totals[k] = totals.get(k, 0) + v
    report["totals"] = totals
    report["max_rss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return report
