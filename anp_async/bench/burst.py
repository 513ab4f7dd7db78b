"""``anp bench burst``: many connections at once, the stack against asyncio on kernel sockets.

Each round, one asyncio client process in the kernel's namespace opens ``--conns N``
connections at the same moment; each writes ``--size B`` bytes, reads them back, checks
them byte for byte and closes. The same round runs against the stack (per receive mode,
over the TAP) and against the same asyncio echo server on kernel sockets (over the veth),
in the same run: each stack round is followed by a kernel round. Reported per setup and
connection count: the median round's time (with the median of the paired per-round
ratios), the connections that failed in all rounds (by exception), and the server
process's CPU per connection -- which should stay flat as N grows (no per-segment scans
of all connections). For the stack also: its CPU per TCP segment in or out (the kernel
client sends more, smaller segments as the stack's RTT grows with N: Linux sizes its TSO
frames by its pacing rate and minimum RTT, down to two segments), the SYN cookies it
sent, the frames the TAP queue dropped, and per connection its retransmissions, timeouts
(those found spurious and undone) and tail loss probes.

Read the asyncio rows' min and max beside the median: with 1,000 connections that
baseline is bimodal. In some rounds its accept queue (asyncio's backlog of 100) is full
when SYNs arrive: Linux drops them (nstat ListenOverflows/ListenDrops on the server) and
the client sends them again one second later (TCPSynRetrans): such rounds take ~1.1 s,
the others ~0.35 s (seen over this veth: 2 of 8 rounds slow, 44 and 100 SYNs dropped).
The median and the paired ratios then depend on how many rounds were slow; the ratio to
the fastest asyncio round is the strict one.

The client (``python -m anp_async.bench.burst client ...``) is bounded: N connections,
one write each, and a time limit per round.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import hashlib
import math
import resource
import statistics
import sys
import time
from typing import Any

from .apps import BenchError
from .common import ECHO_PORT, emit, percentile, proc_cpu_ns
from .procs import STACK_IP, VETH_C_IP, BenchEnv, Peer

#: Upper bounds of one client run, whatever the options ask.
MAX_CONNS = 10_000
MAX_SIZE = 16 << 20
DEFAULT_TIME_LIMIT = 60.0


def _payload(i: int, size: int) -> bytes:
    """Connection ``i``'s bytes: a SHA-256 stream, so a misplaced chunk is noticed."""
    seed = hashlib.sha256(i.to_bytes(4, "big")).digest()
    reps = -(-size // len(seed))
    return (seed * reps)[:size]


async def _one(host: str, i: int, size: int, timeout: float, t0: float) -> dict[str, float]:
    """One connection's echo; when (since ``t0``) it was connected and when it was done."""
    data = _payload(i, size)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, ECHO_PORT), timeout)
    connected = time.perf_counter() - t0
    try:
        writer.write(data)
        got = await asyncio.wait_for(reader.readexactly(size), timeout)
        if got != data:
            raise BenchError(f"connection {i}: echo differs")
        echoed = time.perf_counter() - t0
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)
    return {"connected": connected, "echoed": echoed}


def _quantiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of per-connection times: where a round's tail comes from."""
    if not values:
        return {}
    v = sorted(values)
    out = {f"p{p}": percentile(v, p) for p in (50, 90, 99)}
    out["max"] = v[-1]
    return out


async def run_client(host: str, conns: int, size: int, time_limit: float) -> dict[str, Any]:
    """Open ``conns`` connections at once, echo ``size`` bytes on each; time and failures."""
    conns = max(1, min(conns, MAX_CONNS))
    size = max(1, min(size, MAX_SIZE))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, conns + 256)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(_one(host, i, size, time_limit, t0)) for i in range(conns)]
    done, pending = await asyncio.wait(tasks, timeout=time_limit)
    for t in pending:
        t.cancel()
    secs = time.perf_counter() - t0
    errors: collections.Counter[str] = collections.Counter()
    times: list[dict[str, float]] = []
    for t in done:
        exc = t.exception()
        if exc is not None:
            errors[type(exc).__name__] += 1
        else:
            times.append(t.result())
    if pending:
        errors["NotDoneInTime"] += len(pending)
        await asyncio.wait(pending, timeout=5)
    failed = sum(errors.values())
    return {
        "seconds": secs, "ok": conns - failed, "failed": failed, "errors": dict(errors),
        "connected": _quantiles([t["connected"] for t in times]),
        "echoed": _quantiles([t["echoed"] for t in times]),
    }  # fmt: skip


# ------------------------------------------------------------------------ the runner


def burst_plan(args: Any) -> list[tuple[str, int]]:
    setups = [*args.modes, "asyncio"]
    return [(s, n) for s in setups for n in args.conns]


def _client_round(
    env: BenchEnv, host: str, conns: int, size: int, time_limit: float, cpu_pid: int
) -> dict[str, Any]:
    assert env.ns_k is not None
    argv = env.in_ns(
        env.ns_k, "anp_async.bench.burst", "client", "--host", host, "--conns", str(conns),
        "--size", str(size), "--time-limit", str(time_limit),
    )  # fmt: skip
    job = Peer(f"burst_{conns}", argv, env.log_dir)
    env.peers.append(job)
    cpu0 = proc_cpu_ns(cpu_pid)
    try:
        ev = job.read_event(time_limit + 30)
    finally:
        env.stop(job)
    ev["server_cpu_ns"] = proc_cpu_ns(cpu_pid) - cpu0
    return ev


#: The stack's TCP counters each round records (differences), so a table shows where the
#: time went: retransmissions, timeouts (and how many of them were spurious), loss probes.
ROUND_COUNTERS = (
    "syncookies_sent", "syncookies_ok", "syncookies_failed", "listen_ack_reset",
    "listen_overflow", "conn_retransmits", "conn_timeouts", "conn_spurious_rto",
    "conn_tlp_probes", "conn_tlp_recoveries", "conn_dsack_rx", "conn_recoveries",
    "conn_segments_out", "rst_sent", "conn_rst_sent", "conn_dropped_bad_ack",
    "syn_iss_from_cookie", "rx_segments", "tx_segments", "tso_segments_sent",
    "timers_held", "timers_hold_bound",
)  # fmt: skip


def _stack_counters(peer: Peer) -> dict[str, int]:
    tcp = peer.request({"cmd": "stats"}, 30).get("tcp", {})
    return {n: int(tcp.get(n, 0)) for n in ROUND_COUNTERS}


def _summarize(setup: str, conns: int, size: int, rounds: list[dict[str, Any]]) -> dict:
    secs = [r["seconds"] for r in rounds]
    cpu = [r["server_cpu_ns"] / 1e9 for r in rounds]
    errors: collections.Counter[str] = collections.Counter()
    for r in rounds:
        errors.update(r.get("errors", {}))
    med = statistics.median(secs)
    row = {
        "bench": "burst", "setup": setup, "conns": conns, "size": size, "rounds": len(rounds),
        "seconds": med, "seconds_min": min(secs), "seconds_max": max(secs),
        "seconds_all": secs, "failed": sum(r["failed"] for r in rounds),
        "errors": dict(errors), "cpu_s": statistics.median(cpu),
        "cpu_s_per_conn": statistics.median(cpu) / conns,
    }  # fmt: skip
    for k in ("syncookies_sent", "syncookies_failed", "conn_retransmits", "tap_dropped"):
        if k in rounds[0]:
            row[k] = sum(r[k] for r in rounds)
    for phase in ("connected", "echoed"):
        # Per-connection times within a round (median over the rounds): a p99 or max far
        # above the p50 means a few connections waited for a timer (a SYN or data
        # retransmission), not that every connection was slow.
        for q in ("p50", "p99", "max"):
            vals = [r[phase][q] for r in rounds if r.get(phase)]
            if vals:
                row[f"{phase}_{q}"] = statistics.median(vals)
    paired = [r["x_kernel"] for r in rounds if "x_kernel" in r]
    if paired:
        # The median of each round's time over the kernel round right after it.
        row["x_kernel_paired"] = statistics.median(paired)
    if "counters" in rounds[0]:
        row["counters"] = {
            k: sum(r["counters"].get(k, 0) for r in rounds) for k in ROUND_COUNTERS
        }
        # CPU per TCP segment in or out: what flat CPU per connection asks of each
        # segment, apart from how many segments the peer chose to send (its TSO frames
        # shrink to two segments as the stack's RTT grows under load: tcp_tso_autosize).
        per_frame = [
            r["server_cpu_ns"] / 1e3 / segs for r in rounds
            if (segs := r["counters"]["rx_segments"] + r["counters"]["tx_segments"])
        ]  # fmt: skip
        if per_frame:
            row["cpu_us_per_segment"] = statistics.median(per_frame)
    return row


def _stack_round(env: BenchEnv, sp: Peer, n: int, args: Any) -> dict[str, Any]:
    """One round against the stack, with the stack's counters and the TAP's drops."""
    c0, d0 = _stack_counters(sp), env.tap_counter("tx_dropped")
    ev = _client_round(env, STACK_IP, n, args.size, args.phase_time, sp.pid)
    c1, d1 = _stack_counters(sp), env.tap_counter("tx_dropped")
    ev["counters"] = {k: c1[k] - c0[k] for k in ROUND_COUNTERS}
    for k in ("syncookies_sent", "syncookies_failed", "conn_retransmits"):
        ev[k] = c1[k] - c0[k]
    ev["tap_dropped"] = d1 - d0 if d0 >= 0 and d1 >= 0 else -1
    return ev


def run_burst(env: BenchEnv, args: Any, progress: Any) -> tuple[list[dict], dict]:
    """Every mode, each connection count ``args.rounds`` times; each stack round is
    followed by a round of asyncio on kernel sockets (which serves throughout), so every
    stack round has a kernel round from the same minute beside it: on a shared machine
    the load drifts between minutes, and the paired ratios see less of it."""
    from .runner import _peer

    out: list[dict] = []
    kernel: dict[int, list[dict[str, Any]]] = {n: [] for n in args.conns}
    with _peer(env, env.asyncio_peer) as ap:
        for mode in args.modes:
            with _peer(env, functools.partial(env.stack_peer, mode)) as sp:
                for n in args.conns:
                    rounds = []
                    for _ in range(args.rounds):
                        ev = _stack_round(env, sp, n, args)
                        k = _client_round(env, VETH_C_IP, n, args.size, args.phase_time, ap.pid)
                        kernel[n].append(k)
                        if k["seconds"] > 0:
                            ev["x_kernel"] = ev["seconds"] / k["seconds"]
                        rounds.append(ev)
                    out.append(_summarize(mode, n, args.size, rounds))
                    progress(f"{mode} {n} conns")
    out.extend(_summarize("asyncio", n, args.size, kernel[n]) for n in args.conns)
    return out, {}


def summary_rows(rows: list[dict]) -> list[list[str]]:
    """The table's rows (report.py draws the table), with each setup's ratios to asyncio's
    figure at the same connection count."""
    base = {r["conns"]: r for r in rows if r["setup"] == "asyncio"}
    # CPU per connection against the same setup's smallest count: flat is 1.00.
    first: dict[str, dict] = {}
    for r in rows:
        f = first.get(r["setup"])
        if f is None or r["conns"] < f["conns"]:
            first[r["setup"]] = r
    table = []
    for r in rows:
        b = base.get(r["conns"])
        t_ratio = r["seconds"] / b["seconds"] if b and b["seconds"] else float("nan")
        paired = r.get("x_kernel_paired")
        t_cell = f"{t_ratio:.2f}" if paired is None else f"{t_ratio:.2f} ({paired:.2f})"
        c_ratio = (
            r["cpu_s_per_conn"] / b["cpu_s_per_conn"] if b and b["cpu_s_per_conn"] else float("nan")
        )
        f = first[r["setup"]]
        flat = r["cpu_s_per_conn"] / f["cpu_s_per_conn"] if f["cpu_s_per_conn"] else float("nan")
        seg, seg0 = r.get("cpu_us_per_segment"), f.get("cpu_us_per_segment")
        seg_cell = "-" if seg is None else f"{seg:.1f}" + (f" ({seg / seg0:.2f})" if seg0 else "")
        errs = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "-"
        table.append([
            r["setup"], str(r["conns"]), str(r["size"]), str(r["rounds"]),
            f"{r['seconds']:.3f}", f"{r.get('seconds_min', math.nan):.3f}",
            f"{r['seconds_max']:.3f}", _tail_cell(r), t_cell,
            str(r["failed"]), errs, f"{r['cpu_s_per_conn'] * 1e6:.0f}", f"{c_ratio:.2f}",
            f"{flat:.2f}", seg_cell,
            str(r.get("syncookies_sent", "-")), str(r.get("tap_dropped", "-")), _loss_cell(r),
        ])  # fmt: skip
    return table


def _tail_cell(row: dict) -> str:
    """Per-connection echo times in a round: p50, p99, max (medians over the rounds)."""
    if "echoed_p50" not in row:
        return "-"
    return f"{row['echoed_p50']:.2f} {row['echoed_p99']:.2f} {row['echoed_max']:.2f}"


def _loss_cell(row: dict) -> str:
    """Per connection and round: retransmitted segments, RTOs (spurious ones undone),
    tail loss probes."""
    c = row.get("counters")
    if not c:
        return "-"
    n = row["conns"] * row["rounds"]
    return (
        f"{c['conn_retransmits'] / n:.2f} {c['conn_timeouts'] / n:.2f}"
        f"({c['conn_spurious_rto'] / n:.2f}) {c['conn_tlp_probes'] / n:.2f}"
    )


SUMMARY_COLUMNS = (
    "setup", "conns", "size", "rounds", "seconds (median)", "min", "max",
    "per conn s: p50 p99 max", "x asyncio (paired)",
    "failed", "errors", "cpu µs/conn", "cpu x asyncio", "cpu/conn x fewest conns",
    "cpu µs/segment (x fewest)", "cookies",
    "tap drops",
    "per conn: rtx rto(spurious) tlp",
)  # fmt: skip


# ------------------------------------------------------------------------ the client


def main(argv: list[str] | None = None) -> int:
    """``python -m anp_async.bench.burst client --host H --conns N --size B``."""
    p = argparse.ArgumentParser(prog="anp_async.bench.burst")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client")
    c.add_argument("--host", default=STACK_IP)
    c.add_argument("--conns", type=int, default=1000)
    c.add_argument("--size", type=int, default=64 << 10)
    c.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT)
    a = p.parse_args(argv)
    try:
        res = asyncio.run(run_client(a.host, a.conns, a.size, a.time_limit))
    except Exception as e:  # report, do not hang the harness
        emit({"event": "error", "message": f"{type(e).__name__}: {e}"})
        return 1
    emit({"event": "result", **res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
