"""What a run leaves behind: results.json, results.csv, PNG plots, terminal tables, comparisons."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from .procs import REPO

SETUP_ORDER = ("hardirq", "interrupt", "coalesce", "poll", "adaptive", "asyncio", "kernel")
COLORS = {
    "interrupt": "tab:red",
    "coalesce": "tab:blue",
    "poll": "tab:orange",
    "adaptive": "tab:green",
    "asyncio": "tab:purple",
    "kernel": "black",
    "hardirq": "tab:brown",
}

#: What identifies a summary (for --compare) and which numbers are compared, per benchmark.
KEYS = {
    "latency": ("proto", "setup", "size", "direction"),
    "throughput": ("setup", "direction"),
    "livelock": ("setup", "target_pps"),
    "burst": ("setup", "conns", "size"),
}
METRICS = {
    "latency": ("mean_us", "p50_us", "p99_us", "rate_rps", "cpu_s_per_req"),
    "throughput": ("mbps", "cpu_s_per_mb"),
    "livelock": ("offered_pps", "delivered_pps", "cpu_util"),
    "burst": ("seconds", "failed", "cpu_s_per_conn"),
}


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git() -> dict[str, Any]:
    def run(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=False)
        return r.stdout.strip() if r.returncode == 0 else ""

    rev = run("rev-parse", "HEAD")
    return {"revision": rev or "unknown", "dirty": bool(run("status", "--porcelain"))}


def machine_info() -> dict[str, Any]:
    return {
        "machine": {
            "platform": platform.platform(),
            "arch": platform.machine(),
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "hostname": platform.node(),
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "kernel": platform.release(),
        "git": _git(),
    }


def default_out_dir(bench: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return REPO / "bench" / "results" / f"{stamp}-{bench}"


def write_results(out: Path, doc: dict[str, Any], samples: dict[str, list[int]]) -> None:
    """results.json (+ samples.json for latency) and results.csv, one row per summary."""
    out.mkdir(parents=True, exist_ok=True)
    if samples:
        (out / "samples.json").write_text(json.dumps(samples, separators=(",", ":")))
        doc["samples_file"] = "samples.json"
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    rows = doc["summaries"]
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


# ---------------------------------------------------------------------------- plots


def _setups(rows: list[dict]) -> list[str]:
    present = {r["setup"] for r in rows}
    return [s for s in SETUP_ORDER if s in present] + sorted(present - set(SETUP_ORDER))


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency(out: Path, rows: list[dict], samples: dict[str, list[int]]) -> list[str]:
    """Per (proto, direction): latency CDFs per size (log x) and a percentile bar chart."""
    plt = _plt()
    files: list[str] = []
    combos = sorted({(r["proto"], r["direction"]) for r in rows if r["setup"] != "kernel"})
    for proto, direction in combos:
        sel = [
            r
            for r in rows
            if r["proto"] == proto and (r["direction"] == direction or r["setup"] == "kernel")
        ]
        sizes = sorted({r["size"] for r in sel})
        setups = _setups(sel)
        from matplotlib.ticker import NullFormatter

        fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.8), squeeze=False)
        for ax, size in zip(axes[0], sizes, strict=True):
            for setup in setups:
                d = "kernel" if setup == "kernel" else direction
                xs = samples.get(f"{proto}/{setup}/{size}/{d}")
                if not xs:
                    continue
                us = sorted(x / 1e3 for x in xs)
                ys = [(i + 1) / len(us) for i in range(len(us))]
                ax.step(us, ys, where="post", label=setup, color=COLORS.get(setup))
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{size} B")
            ax.set_xlabel("round trip (µs)")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel("fraction of requests")
        axes[0][-1].legend(fontsize=8, loc="lower right")
        fig.suptitle(f"{proto.upper()} request/response latency CDF, {direction}")
        fig.tight_layout()
        name = f"latency_cdf_{proto}_{direction}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(name)

        pcts = ("p50_us", "p90_us", "p99_us", "p99.9_us")
        fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.8), squeeze=False)
        for ax, size in zip(axes[0], sizes, strict=True):
            rs = {r["setup"]: r for r in sel if r["size"] == size}
            present = [s for s in setups if s in rs]
            width = 0.8 / len(pcts)
            for j, p in enumerate(pcts):
                ax.bar(
                    [i + j * width for i in range(len(present))],
                    [rs[s][p] for s in present],
                    width,
                    yerr=_yerr([rs[s] for s in present], p),
                    capsize=2,
                    label=p.removesuffix("_us"),
                )
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(present))])
            ax.set_xticklabels(present, rotation=30, fontsize=8)
            ax.set_yscale("log")
            ax.set_title(f"{size} B")
            ax.grid(True, axis="y", which="both", alpha=0.3)
        axes[0][0].set_ylabel("round trip (µs)")
        axes[0][-1].legend(fontsize=8)
        fig.suptitle(f"{proto.upper()} latency percentiles, {direction}")
        fig.tight_layout()
        name = f"percentiles_{proto}_{direction}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(name)
    return files


def _yerr(rows: list[dict], metric: str, scale: float = 1.0) -> Any:
    """Error bars from the spread of repeated runs (None when each row is a single run)."""
    if not any(f"{metric}_min" in r for r in rows):
        return None
    lo = [(r[metric] - r.get(f"{metric}_min", r[metric])) * scale for r in rows]
    hi = [(r.get(f"{metric}_max", r[metric]) - r[metric]) * scale for r in rows]
    return [lo, hi]


def plot_sweep(out: Path, rows: list[dict]) -> list[str]:
    """A swept knob on the x axis: p50 and p99 (with the spread of repeated runs as error
    bars) and the stack's CPU per request, one column per message size, per protocol and
    direction; the kernel and asyncio baselines of the same run as dashed lines."""
    swept = [r for r in rows if r.get("knob")]
    if not swept:
        return []
    plt = _plt()
    knob = swept[0]["knob"]
    files = []
    for proto, direction in sorted({(r["proto"], r["direction"]) for r in swept}):
        sel = [r for r in swept if r["proto"] == proto and r["direction"] == direction]
        sizes = sorted({r["size"] for r in sel})
        fig, axes = plt.subplots(
            2,
            len(sizes),
            figsize=(max(7.0, 4.6 * len(sizes)), 6.8),
            squeeze=False,
            sharex="col",
        )
        for col, size in enumerate(sizes):
            rs = sorted((r for r in sel if r["size"] == size), key=lambda r: r["knob_value"])
            xs = list(range(len(rs)))
            ax, ax2 = axes[0][col], axes[1][col]
            for metric, style in (("p50_us", "o-"), ("p99_us", "s--")):
                ax.errorbar(
                    xs, [r[metric] for r in rs], yerr=_yerr(rs, metric), fmt=style, capsize=3,
                    label=metric.removesuffix("_us"),
                )  # fmt: skip
            for base in ("kernel", "asyncio"):
                b = next(
                    (r for r in rows if r["setup"] == base and r["proto"] == proto
                     and r["size"] == size and r["direction"] in (direction, "kernel")),
                    None,
                )  # fmt: skip
                if b is not None:
                    ax.axhline(b["p50_us"], ls=":", color=COLORS[base], label=f"{base} p50")
            ax2.errorbar(
                xs, [r["cpu_s_per_req"] * 1e6 for r in rs],
                yerr=_yerr(rs, "cpu_s_per_req", 1e6), fmt="o-", capsize=3, color="tab:gray",
            )  # fmt: skip
            ax.set_yscale("log")
            ax.set_title(f"{size} B")
            ax.grid(True, which="both", alpha=0.3)
            ax2.grid(True, alpha=0.3)
            ax2.set_xticks(xs)
            ax2.set_xticklabels([str(r["knob_value"]) for r in rs])
            ax2.set_xlabel(knob)
            if any(w.startswith("p99 ") for r in rs for w in r.get("warnings") or ()):
                ax.set_title(f"{size} B (p99 rests on < 10 samples beyond it)")
        axes[0][0].set_ylabel("round trip (µs, log)")
        axes[1][0].set_ylabel("stack CPU per request (µs)")
        axes[0][-1].legend(fontsize=7)
        runs = max(r.get("runs", 1) for r in sel)
        fig.suptitle(
            f"{proto.upper()} {direction}: latency vs {knob} ({sel[0].get('mode', '')})"
            + (f"\nmedian of {runs} runs, bars = min..max between runs" if runs > 1 else "")
        )
        fig.tight_layout()
        name = f"sweep_{knob}_{proto}_{direction}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(name)
    return files


def plot_throughput(out: Path, rows: list[dict]) -> list[str]:
    plt = _plt()
    setups = _setups(rows)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    dirs = ("stack-send", "stack-receive")
    width = 0.38
    for j, d in enumerate(dirs):
        vals, cpus = [], []
        for s in setups:
            r = next(
                (
                    r
                    for r in rows
                    if r["setup"] == s and (r["direction"] == d or r["direction"] == "kernel")
                ),
                None,
            )
            vals.append(r["mbps"] if r else 0.0)
            cpus.append(r["cpu_s_per_mb"] * 1e3 if r else 0.0)
        xs = [i + j * width for i in range(len(setups))]
        ax.bar(xs, vals, width, label=d)
        ax2.bar(xs, cpus, width, label=d)
    for a in (ax, ax2):
        a.set_xticks([i + width / 2 for i in range(len(setups))])
        a.set_xticklabels(setups, rotation=20)
        a.set_yscale("log")
        a.grid(True, axis="y", which="both", alpha=0.3)
        a.legend(fontsize=8)
    ax.set_ylabel("MB/s (receiver, log)")
    ax.set_title("bulk TCP throughput")
    ax2.set_ylabel("CPU ms per MB (process under test, log)")
    ax2.set_title("CPU cost")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=100)
    plt.close(fig)
    return ["throughput.png"]


def plot_livelock(out: Path, rows: list[dict]) -> list[str]:
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    top = 1.0
    for s in _setups(rows):
        rs = sorted((r for r in rows if r["setup"] == s), key=lambda r: r["offered_pps"])
        xs = [r["offered_pps"] for r in rs]
        ax.errorbar(
            xs, [r["delivered_pps"] for r in rs], yerr=_yerr(rs, "delivered_pps"), fmt="o-",
            capsize=3, label=s, color=COLORS.get(s),
        )  # fmt: skip
        ax2.errorbar(
            xs, [r["cpu_util"] * 100 for r in rs], yerr=_yerr(rs, "cpu_util", 100), fmt="o-",
            capsize=3, label=s, color=COLORS.get(s),
        )  # fmt: skip
        top = max([top, *xs])
    ax.plot([0, top], [0, top], ":", color="gray", label="delivered = offered")
    # Past the knee, delivered is a few percent of offered: scale the axes to what was
    # delivered (the diagonal leaves the plot) and spread the rates, so a collapse shows.
    most = max((r.get("delivered_pps_max", r["delivered_pps"]) for r in rows), default=1.0)
    ax.set_ylim(0, most * 1.3 or 1.0)
    if len({r["offered_pps"] for r in rows}) > 2:
        ax.set_xscale("log")
        ax2.set_xscale("log")
    ax.set_xlabel("offered rate (datagrams/s)")
    ax.set_ylabel("delivered to the application (datagrams/s)")
    work = rows[0].get("app_work_us", 0) if rows else 0
    runs = max((r.get("runs", 1) for r in rows), default=1)
    ax.set_title(
        "receive livelock: delivered vs offered"
        + (f"\n(application work {work} µs per datagram)" if work else "")
        + (f" median of {runs} runs" if runs > 1 else "")
    )
    ax2.set_xlabel("offered rate (datagrams/s)")
    ax2.set_ylabel("stack process CPU (%)")
    ax2.set_title("CPU of the stack process")
    for a in (ax, ax2):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "livelock.png", dpi=100)
    plt.close(fig)
    return ["livelock.png"]


def make_plots(out: Path, bench: str, rows: list[dict], samples: dict) -> list[str]:
    if bench == "latency":
        return plot_latency(out, rows, samples) + plot_sweep(out, rows)
    if bench == "throughput":
        return plot_throughput(out, rows)
    if bench == "burst":
        return []  # the table says it all
    return plot_livelock(out, rows)


# ---------------------------------------------------------------------------- tables


def _f(v: Any, digits: int = 1) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.{digits}f}"
    return str(v)


def _spread(r: dict, metric: str, digits: int = 1, scale: float = 1.0) -> str:
    """``value`` or ``value ±x%`` (half the min..max range of repeated runs)."""
    text = _f(r[metric] * scale, digits)
    pct = r.get(f"{metric}_spread_pct")
    return f"{text} ±{pct / 2:.0f}%" if pct is not None else text


def _warned(r: dict, pct: str) -> str:
    return "*" if any(w.startswith(pct + " ") for w in r.get("warnings") or ()) else ""


def warning_lines(rows: list[dict]) -> list[str]:
    """One line per summary whose percentiles rest on too few samples (marked * in tables)."""
    by_msg: dict[str, list[str]] = {}
    for r in rows:
        for w in r.get("warnings") or ():
            where = " ".join(str(r[k]) for k in ("proto", "direction", "setup", "size") if k in r)
            by_msg.setdefault(w, []).append(where)
    out = []
    for w, wheres in by_msg.items():
        rest = f" and {len(wheres) - 2} more" if len(wheres) > 2 else ""
        out.append(f"{w} -- in {', '.join(wheres[:2])}{rest}")
    return out


def summary_table(bench: str, rows: list[dict], queues: int = 1) -> Any:
    """The summary table; with ``queues`` > 1 its title names the stack's queue count
    (a multi-queue host: one worker per queue, CPU summed over the workers)."""
    from rich.table import Table

    title = f"anp bench {bench}"
    if queues > 1:
        title += f" (stack: {queues} queues, one worker each; stack CPU = all workers')"
    t = Table(title=title, header_style="bold")
    if bench == "latency":
        cols = (
            "proto",
            "direction",
            "setup",
            "size",
            "count",
            "mean µs",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "req/s",
            "cpu µs/req",
            "of it sys",
            "cpu %",
        )
        for c in cols:
            t.add_column(c, justify="left" if c in cols[:3] else "right")
        order = {s: i for i, s in enumerate(SETUP_ORDER)}
        for r in sorted(
            rows,
            key=lambda r: (
                r["proto"],
                r["direction"] == "stack-client",
                r["size"],
                order.get(r["setup"], 99),
            ),
        ):
            t.add_row(
                r["proto"],
                r["direction"],
                r["setup"],
                str(r["size"]),
                str(r["count"]),
                _f(r["mean_us"]),
                _spread(r, "p50_us"),
                _f(r["p90_us"]),
                _spread(r, "p99_us") + _warned(r, "p99"),
                _f(r["p99.9_us"]) + _warned(r, "p99.9"),
                _f(r["max_us"]),
                _f(r["rate_rps"], 0),
                _spread(r, "cpu_s_per_req", scale=1e6),
                _f(r.get("cpu_sys_s_per_req", math.nan) * 1e6),
                _f(r["cpu_util"] * 100, 0),
            )
        runs = max((r.get("runs", 1) for r in rows), default=1)
        if runs > 1:
            t.caption = f"median of {runs} runs; ±: half the range between runs; * few samples"
        elif any(r.get("warnings") for r in rows):
            t.caption = "* this percentile rests on fewer than 10 samples beyond it"
    elif bench == "throughput":
        for c in ("setup", "direction", "MB", "seconds", "MB/s", "cpu s", "cpu ms/MB"):
            t.add_column(c, justify="left" if c in ("setup", "direction") else "right")
        for r in rows:
            t.add_row(
                r["setup"],
                r["direction"],
                _f(r["bytes"] / 1e6),
                _f(r["seconds"], 3),
                _f(r["mbps"]),
                _f(r["cpu_s"], 3),
                _f(r["cpu_s_per_mb"] * 1e3, 2),
            )
    elif bench == "burst":
        from .burst import SUMMARY_COLUMNS, summary_rows

        for c in SUMMARY_COLUMNS:
            t.add_column(c, justify="left" if c in ("setup", "errors") else "right")
        for row in summary_rows(rows):
            t.add_row(*row)
        t.caption = "x asyncio: the same figure for asyncio on kernel sockets, same run"
    else:
        for c in (
            "mode",
            "target/s",
            "offered/s",
            "delivered/s",
            "delivered %",
            "app-queue drops",
            "tap drops",
            "cpu %",
        ):
            t.add_column(c, justify="left" if c == "mode" else "right")
        for r in rows:
            pct = 100 * r["delivered_pps"] / r["offered_pps"] if r["offered_pps"] else math.nan
            t.add_row(
                r["setup"],
                _f(r["target_pps"], 0),
                _f(r["offered_pps"], 0),
                _spread(r, "delivered_pps", 0),
                _f(pct),
                str(r["app_queue_dropped"]),
                str(r["tap_dropped"]),
                _f(r["cpu_util"] * 100, 0),
            )
    return t


def asyncio_ratio_lines(bench: str, rows: list[dict]) -> list[str]:
    """The stack's CPU per request (latency) or per MB (throughput) as a multiple of
    asyncio on kernel sockets' in the same run: the issue 11 yardstick."""
    keys: tuple[str, ...]
    if bench == "latency":
        metric, unit, scale, keys = "cpu_s_per_req", "µs/req", 1e6, ("proto", "size", "direction")
    elif bench == "throughput":
        metric, unit, scale, keys = "cpu_s_per_mb", "ms/MB", 1e3, ("direction",)
    else:
        return []
    base = {tuple(r[k] for k in keys): r for r in rows if r["setup"] == "asyncio"}
    lines = []
    for r in rows:
        b = base.get(tuple(r[k] for k in keys))
        if r["setup"] in ("asyncio", "kernel") or b is None or not b.get(metric):
            continue
        what = " ".join(str(r[k]) for k in keys)
        lines.append(
            f"{r['setup']} {what}: stack cpu {r[metric] * scale:.2f} {unit} = "
            f"{r[metric] / b[metric]:.2f}x asyncio on kernel sockets ({b[metric] * scale:.2f})"
        )
    return lines


# --------------------------------------------------------------------------- compare


def load_results(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    return json.loads(p.read_text())


def compare(new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    """Ratios new/old of the benchmark's metrics for every key present in both runs."""
    bench = new["benchmark"]
    if old.get("benchmark") != bench:
        raise ValueError(f"cannot compare a {bench} run with a {old.get('benchmark')} run")
    keys = KEYS[bench]
    old_by = {tuple(r[k] for k in keys): r for r in old["summaries"]}
    out = []
    for r in new["summaries"]:
        key = tuple(r[k] for k in keys)
        o = old_by.get(key)
        if o is None:
            continue
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        for m in METRICS[bench]:
            a, b = r.get(m), o.get(m)
            row[m] = (
                a / b
                if isinstance(a, int | float) and isinstance(b, int | float) and b
                else math.nan
            )
        out.append(row)
    return out


def compare_table(bench: str, rows: list[dict[str, Any]], old_name: str) -> Any:
    from rich.table import Table

    t = Table(title=f"new / old ({old_name})", header_style="bold")
    keys, metrics = KEYS[bench], METRICS[bench]
    for k in keys:
        t.add_column(k)
    for m in metrics:
        t.add_column(m, justify="right")
    for r in rows:
        t.add_row(*(str(r[k]) for k in keys), *(_f(r[m], 3) for m in metrics))
    return t
