"""The three experiments: request/response latency, bulk throughput, receive livelock.

Each ``run_*`` takes the parsed ``anp bench`` arguments, runs every phase inside a
:class:`anp_async.bench.procs.BenchEnv` and returns ``(summaries, samples)``: one flat dict per
measured configuration (JSON/CSV-ready) and, for latency, the raw samples per key. Any
peer error (echo mismatch, lost reply, hash mismatch, a peer that dies) raises BenchError
and the run reports nothing.

"setup" names what is measured: a receive mode of the stack (interrupt, coalesce, poll,
adaptive), ``asyncio`` (the same asyncio application on kernel sockets over the veth) or
``kernel`` (blocking sockets on both ends of the veth).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from .apps import BenchError
from .common import MAX_DATAGRAM_PAYLOAD, latency_summary, proc_cpu_ns, proc_sys_ns
from .procs import STACK_IP, TAP_KERNEL_IP, VETH_C_IP, VETH_K_IP, BenchEnv, Peer
from .sweep import Setup, aggregate, stack_setups, tail_warnings

Progress = Callable[[str], None]

#: Seconds a peer may stay silent beyond a phase's own time limit before the run fails.
SLACK = 30.0


def size_for(proto: str, size: int) -> int:
    """UDP data and ICMP echo data cannot exceed 65507 bytes in IPv4: bigger sizes are capped
    (larger ones above 1472 bytes travel as IP fragments, which the stack reassembles)."""
    return size if proto == "tcp" else min(size, MAX_DATAGRAM_PAYLOAD)


def latency_plan(args: Any) -> list[tuple[str, str, str, int]]:
    """Every (setup, direction, proto, size) phase of a latency run, in run order."""
    plan: list[tuple[str, str, str, int]] = []

    def sizes(proto: str) -> list[int]:
        return list(dict.fromkeys(size_for(proto, s) for s in args.sizes))

    for st in stack_setups(args):
        for direction in args.directions:
            for proto in args.protos:
                plan += [(st.label, direction, proto, s) for s in sizes(proto)]
    if getattr(args, "no_baselines", False):
        return plan
    for proto in args.protos:
        plan += [("kernel", "kernel", proto, s) for s in sizes(proto)]
    for direction in args.directions:
        for proto in args.protos:
            if proto != "icmp":  # asyncio has no ICMP echo to run on kernel sockets
                plan += [("asyncio", direction, proto, s) for s in sizes(proto)]
    return plan


def _client_args(proto: str, size: int, args: Any, host: str) -> list[str]:
    return [
        "client", "--proto", proto, "--host", host, "--size", str(size),
        "--count", str(args.count), "--warmup", str(args.warmup), "--seed", str(args.seed),
        "--time-limit", str(args.phase_time),
    ]  # fmt: skip


def _kernel_client(
    env: BenchEnv, ns: Any, cpu_pid: int, proto: str, size: int, host: str, args: Any
) -> dict[str, Any]:
    """Run a kernel_peer client; sample ``cpu_pid``'s CPU at warm-up end and at the end."""
    job = env.kernel_job(ns, f"client_{proto}_{size}", *_client_args(proto, size, args, host))
    try:
        where = env.place(cpu_pid, job.pid)
        timeout = args.phase_time + SLACK
        ev = job.read_event(timeout)
        if ev["event"] != "warm":
            raise BenchError(f"client answered {ev} before warm-up ended")
        cpu0, sys0 = proc_cpu_ns(cpu_pid), proc_sys_ns(cpu_pid)
        ev = job.read_event(timeout)
        cpu1, sys1 = proc_cpu_ns(cpu_pid), proc_sys_ns(cpu_pid)
    finally:
        env.stop(job)
    ev["subject_cpu_ns"] = cpu1 - cpu0
    ev["subject_sys_ns"] = sys1 - sys0 if sys0 >= 0 and sys1 >= 0 else -1
    ev.update(where)
    return ev


def _peer_client(
    env: BenchEnv, peer: Peer, server: Peer, proto: str, size: int, host: str, args: Any
) -> dict[str, Any]:
    """Run the measuring client inside ``peer`` (stack or asyncio) against the kernel's
    ``server``: it reports its own CPU."""
    where = env.place(peer.pid, server.pid)
    cmd = {
        "cmd": "client", "proto": proto, "host": host, "size": size, "count": args.count,
        "warmup": args.warmup, "seed": args.seed, "time_limit": args.phase_time,
    }  # fmt: skip
    timeout = args.phase_time + SLACK
    ev = peer.request(cmd, timeout)
    if ev["event"] != "warm":
        raise BenchError(f"{peer.name} answered {ev} before warm-up ended")
    ev = peer.read_event(timeout)
    ev["subject_cpu_ns"] = ev["cpu_ns"]
    ev["subject_sys_ns"] = ev.get("sys_ns", -1)
    ev.update(where)
    return ev


def _summary(setup: str, direction: str, proto: str, size: int, ev: dict[str, Any]) -> dict:
    s = latency_summary(ev["samples_ns"], ev["wall_ns"])
    n = s["count"] or 1
    cpu = ev["subject_cpu_ns"] / 1e9
    sys_ns = ev.get("subject_sys_ns", -1)
    return {
        "bench": "latency", "proto": proto, "setup": setup, "size": size,
        "direction": direction, **s, "cpu_s": cpu, "cpu_s_per_req": cpu / n,
        # the kernel's part of it (10 ms ticks; NaN when unknown)
        "cpu_sys_s_per_req": sys_ns / 1e9 / n if sys_ns >= 0 else math.nan,
        # where the process under test and its peer could run (--placement)
        "subject_cpus": ev.get("subject_cpus"), "peer_cpus": ev.get("peer_cpus"),
        "cpu_util": cpu / (ev["wall_ns"] / 1e9) if ev["wall_ns"] else 0.0,
        "truncated": bool(ev.get("truncated")),
    }  # fmt: skip


@contextlib.contextmanager
def _peer(env: BenchEnv, start: Callable[[], Peer]) -> Iterator[Peer]:
    p = start()
    try:
        yield p
    finally:
        env.stop(p)


#: What identifies a latency summary, and the figures whose spread repeated runs report.
LATENCY_KEYS = ("proto", "setup", "size", "direction")
LATENCY_METRICS = (
    "mean_us", "p50_us", "p90_us", "p99_us", "p99.9_us", "max_us", "rate_rps",
    "cpu_s_per_req", "cpu_sys_s_per_req", "cpu_util",
)  # fmt: skip


def _tag(row: dict, st: Setup | None) -> dict:
    """Add the swept knob and its value, and the tail warnings, to a summary row."""
    if st is not None and st.knob is not None:
        row["mode"], row["knob"], row["knob_value"] = st.mode, st.knob, st.value
    row["warnings"] = tail_warnings(row) if row.get("bench") == "latency" else []
    return row


def run_latency(env: BenchEnv, args: Any, progress: Progress) -> tuple[list[dict], dict]:
    """Request/response latency for every planned phase, ``--repeat`` times (interleaved);
    the summaries are the medians of the runs with their spread."""
    runs: list[list[dict]] = []
    samples: dict[str, list[int]] = {}
    for rep in range(getattr(args, "repeat", 1) or 1):
        rows: list[dict] = []
        runs.append(rows)
        _latency_once(env, args, progress, rows, samples, rep)
    summaries = aggregate(runs, LATENCY_KEYS, LATENCY_METRICS)
    for r in summaries:
        r["warnings"] = tail_warnings(r)
    return summaries, samples


def _latency_once(
    env: BenchEnv, args: Any, progress: Progress, summaries: list[dict],
    samples: dict[str, list[int]], rep: int,
) -> None:  # fmt: skip
    plan = latency_plan(args)
    # the kernel's servers: the baseline's, and the peer of every stack-client phase
    need_ks = not getattr(args, "no_baselines", False) or "stack-client" in args.directions
    ks = env.kernel_server() if need_ks else None
    assert env.ns_k is not None and env.ns_c is not None
    setups = {st.label: st for st in stack_setups(args)}

    def record(setup: str, direction: str, proto: str, size: int, ev: dict) -> None:
        summaries.append(_tag(_summary(setup, direction, proto, size, ev), setups.get(setup)))
        samples.setdefault(f"{proto}/{setup}/{size}/{direction}", []).extend(ev["samples_ns"])
        progress(f"{proto} {setup} {size} B {direction}" + (f" (run {rep + 1})" if rep else ""))

    for st in setups.values():
        with _peer(env, functools.partial(env.stack_peer, st.mode, st.params)) as sp:
            for setup, direction, proto, size in plan:
                if setup != st.label:
                    continue
                if direction == "stack-server":
                    ev = _kernel_client(env, env.ns_k, sp.pid, proto, size, env.addr("stack"), args)
                else:
                    assert ks is not None
                    ev = _peer_client(env, sp, ks, proto, size, env.addr("tap-kernel"), args)
                record(st.label, direction, proto, size, ev)
    for setup, direction, proto, size in plan:
        if setup == "kernel":
            assert ks is not None
            ev = _kernel_client(env, env.ns_c, ks.pid, proto, size, env.addr("veth-k"), args)
            record(setup, direction, proto, size, ev)
    if any(p[0] == "asyncio" for p in plan):
        with _peer(env, env.asyncio_peer) as ap:
            for setup, direction, proto, size in plan:
                if setup != "asyncio":
                    continue
                if direction == "stack-server":
                    ev = _kernel_client(env, env.ns_k, ap.pid, proto, size, env.addr("veth-c"), args)
                else:
                    assert ks is not None
                    ev = _peer_client(env, ap, ks, proto, size, env.addr("veth-k"), args)
                record(setup, direction, proto, size, ev)


# ---------------------------------------------------------------------- throughput


def throughput_plan(args: Any) -> list[tuple[str, str]]:
    plan = [(m, d) for m in args.modes for d in ("stack-send", "stack-receive")]
    plan += [("kernel", "kernel"), ("asyncio", "stack-send"), ("asyncio", "stack-receive")]
    return plan


def _bulk_summary(
    setup: str, direction: str, nbytes: int, ev: dict, stack_side: str | None
) -> dict:
    sink = ev["sink"]
    if sink["bytes"] != nbytes or not sink["verified"]:
        raise BenchError(
            f"bulk {setup} {direction}: {sink['bytes']} bytes, "
            f"{'all' if sink['verified'] else 'not all'} as sent; expected {nbytes} bytes"
        )
    secs = sink["wall_ns"] / 1e9
    send_cpu, recv_cpu = ev["sender_cpu_ns"] / 1e9, sink["cpu_ns"] / 1e9
    cpu = {"send": send_cpu, "receive": recv_cpu, None: recv_cpu}[stack_side]
    mb = nbytes / 1e6
    return {
        "bench": "throughput", "setup": setup, "direction": direction, "bytes": nbytes,
        "seconds": secs, "mbps": mb / secs if secs > 0 else 0.0, "cpu_s": cpu,
        "cpu_s_per_mb": cpu / mb, "sender_cpu_s": send_cpu, "receiver_cpu_s": recv_cpu,
        "verified": True,
    }  # fmt: skip


def run_throughput(env: BenchEnv, args: Any, progress: Progress) -> tuple[list[dict], dict]:
    """Bulk TCP transfer each direction per mode, plus the kernel and asyncio baselines.

    MB/s is the receiver's (first byte to EOF); CPU is the process under test's for the
    transfer (the stack's when it sends or receives; the kernel baseline's receiver)."""
    n = args.bytes
    timeout = args.phase_time + SLACK
    out: list[dict] = []
    env.kernel_server()
    assert env.ns_k is not None and env.ns_c is not None

    def kernel_send(ns: Any, host: str) -> dict:
        job = env.kernel_job(
            ns,
            "bulk_send",
            "bulk-send",
            "--host",
            host,
            "--bytes",
            str(n),
            "--seed",
            str(args.seed),
        )
        try:
            return job.read_event(timeout)
        finally:
            env.stop(job)

    def peer_send(peer: Peer, host: str) -> dict:
        return peer.request(
            {"cmd": "bulk_send", "host": host, "bytes": n, "seed": args.seed}, timeout
        )

    for mode in args.modes:
        with _peer(env, functools.partial(env.stack_peer, mode)) as sp:
            ev = peer_send(sp, TAP_KERNEL_IP)
            out.append(_bulk_summary(mode, "stack-send", n, ev, "send"))
            progress(f"{mode} stack-send")
            cpu0 = proc_cpu_ns(sp.pid)
            ev = kernel_send(env.ns_k, STACK_IP)
            if env.queues > 1:  # the sink's own figure is one worker's: take all workers'
                ev["sink"]["cpu_ns"] = proc_cpu_ns(sp.pid) - cpu0
            out.append(_bulk_summary(mode, "stack-receive", n, ev, "receive"))
            progress(f"{mode} stack-receive")
    ev = kernel_send(env.ns_c, VETH_K_IP)
    out.append(_bulk_summary("kernel", "kernel", n, ev, None))
    progress("kernel")
    with _peer(env, env.asyncio_peer) as ap:
        ev = peer_send(ap, VETH_K_IP)
        out.append(_bulk_summary("asyncio", "stack-send", n, ev, "send"))
        progress("asyncio stack-send")
        ev = kernel_send(env.ns_k, VETH_C_IP)
        out.append(_bulk_summary("asyncio", "stack-receive", n, ev, "receive"))
        progress("asyncio stack-receive")
    return out, {}


# ------------------------------------------------------------------------ livelock


LIVELOCK_KEYS = ("setup", "target_pps")
LIVELOCK_METRICS = ("offered_pps", "delivered_pps", "cpu_util", "stack_received")


def run_livelock(env: BenchEnv, args: Any, progress: Progress) -> tuple[list[dict], dict]:
    """Offer increasing UDP rates to the stack's sink application; count what it consumes.

    Delivered = datagrams the application task took off its queue (doing ``--app-work-us``
    of work on each) during the blast and a short drain afterwards, divided by the blast's
    duration. With ``--repeat N`` the summaries are medians with the spread of the runs."""
    runs: list[list[dict]] = []
    for rep in range(getattr(args, "repeat", 1) or 1):
        rows: list[dict] = []
        runs.append(rows)
        _livelock_once(env, args, progress, rows, rep)
    return aggregate(runs, LIVELOCK_KEYS, LIVELOCK_METRICS), {}


def _livelock_once(env: BenchEnv, args: Any, progress: Progress, out: list[dict], rep: int) -> None:
    assert env.ns_k is not None
    timeout = args.duration + SLACK
    work = int(getattr(args, "app_work_us", 0) or 0)
    for st in stack_setups(args):
        with _peer(env, functools.partial(env.stack_peer, st.mode, st.params)) as sp:
            sp.request({"cmd": "sink", "work_us": work}, timeout)
            # One datagram first so ARP is resolved before the clock starts.
            warm = env.kernel_job(
                env.ns_k,
                "blast_warm",
                "blast",
                "--host",
                STACK_IP,
                "--rate",
                "100",
                "--duration",
                "0.05",
            )
            warm.read_event(timeout)
            env.stop(warm)
            for rate in args.rates:
                c0 = sp.request({"cmd": "sink"}, timeout)
                cpu0, drop0 = proc_cpu_ns(sp.pid), env.tap_counter("tx_dropped")
                job = env.kernel_job(
                    env.ns_k,
                    f"blast_{rate}",
                    "blast",
                    "--host",
                    STACK_IP,
                    "--rate",
                    str(rate),
                    "--duration",
                    str(args.duration),
                )
                try:
                    ev = job.read_event(timeout)
                finally:
                    env.stop(job)
                time.sleep(args.drain)
                cpu1, drop1 = proc_cpu_ns(sp.pid), env.tap_counter("tx_dropped")
                c1 = sp.request({"cmd": "sink"}, timeout)
                el = ev["elapsed"]
                consumed = c1["consumed"] - c0["consumed"]
                row = {
                    "bench": "livelock", "setup": st.label, "target_pps": rate,
                    "app_work_us": work,
                    "sent": ev["sent"], "send_errors": ev["send_errors"], "seconds": el,
                    "offered_pps": ev["offered_pps"], "delivered": consumed,
                    "delivered_pps": consumed / el if el > 0 else 0.0,
                    "stack_received": c1["received"] - c0["received"],
                    "app_queue_dropped": c1["dropped"] - c0["dropped"],
                    "tap_dropped": drop1 - drop0 if drop0 >= 0 and drop1 >= 0 else -1,
                    "cpu_s": (cpu1 - cpu0) / 1e9,
                    "cpu_util": (cpu1 - cpu0) / 1e9 / (el + args.drain),
                }  # fmt: skip
                out.append(_tag(row, st))
                progress(f"{st.label} {rate} pps" + (f" (run {rep + 1})" if rep else ""))


def _times(args: Any) -> int:
    return max(1, getattr(args, "repeat", 1) or 1)


PLANS: dict[str, Callable[[Any], list]] = {
    "latency": lambda a: latency_plan(a) * _times(a),
    "throughput": throughput_plan,
    "livelock": lambda a: [(st, r) for st in stack_setups(a) for r in a.rates] * _times(a),
}
RUNNERS = {"latency": run_latency, "throughput": run_throughput, "livelock": run_livelock}


def _register_burst() -> None:
    from .burst import burst_plan, run_burst

    PLANS["burst"] = burst_plan
    RUNNERS["burst"] = run_burst


_register_burst()
