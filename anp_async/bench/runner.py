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
import time
from collections.abc import Callable, Iterator
from typing import Any

from .apps import BenchError
from .common import MAX_DATAGRAM_PAYLOAD, bulk_sha256, latency_summary, proc_cpu_ns
from .procs import STACK_IP, TAP_KERNEL_IP, VETH_C_IP, VETH_K_IP, BenchEnv, Peer

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

    for mode in args.modes:
        for direction in args.directions:
            for proto in args.protos:
                plan += [(mode, direction, proto, s) for s in sizes(proto)]
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
        timeout = args.phase_time + SLACK
        ev = job.read_event(timeout)
        if ev["event"] != "warm":
            raise BenchError(f"client answered {ev} before warm-up ended")
        cpu0 = proc_cpu_ns(cpu_pid)
        ev = job.read_event(timeout)
        cpu1 = proc_cpu_ns(cpu_pid)
    finally:
        env.stop(job)
    ev["subject_cpu_ns"] = cpu1 - cpu0
    return ev


def _peer_client(peer: Peer, proto: str, size: int, host: str, args: Any) -> dict[str, Any]:
    """Run the measuring client inside ``peer`` (stack or asyncio): it reports its own CPU."""
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
    return ev


def _summary(setup: str, direction: str, proto: str, size: int, ev: dict[str, Any]) -> dict:
    s = latency_summary(ev["samples_ns"], ev["wall_ns"])
    n = s["count"] or 1
    cpu = ev["subject_cpu_ns"] / 1e9
    return {
        "bench": "latency", "proto": proto, "setup": setup, "size": size,
        "direction": direction, **s, "cpu_s": cpu, "cpu_s_per_req": cpu / n,
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


def run_latency(env: BenchEnv, args: Any, progress: Progress) -> tuple[list[dict], dict]:
    """Request/response latency for every planned phase."""
    summaries: list[dict] = []
    samples: dict[str, list[int]] = {}
    plan = latency_plan(args)
    ks = env.kernel_server()
    assert env.ns_k is not None and env.ns_c is not None

    def record(setup: str, direction: str, proto: str, size: int, ev: dict) -> None:
        summaries.append(_summary(setup, direction, proto, size, ev))
        samples[f"{proto}/{setup}/{size}/{direction}"] = ev["samples_ns"]
        progress(f"{proto} {setup} {size} B {direction}")

    for mode in args.modes:
        with _peer(env, lambda m=mode: env.stack_peer(m)) as sp:
            for setup, direction, proto, size in plan:
                if setup != mode:
                    continue
                if direction == "stack-server":
                    ev = _kernel_client(env, env.ns_k, sp.pid, proto, size, STACK_IP, args)
                else:
                    ev = _peer_client(sp, proto, size, TAP_KERNEL_IP, args)
                record(mode, direction, proto, size, ev)
    for setup, direction, proto, size in plan:
        if setup == "kernel":
            ev = _kernel_client(env, env.ns_c, ks.pid, proto, size, VETH_K_IP, args)
            record(setup, direction, proto, size, ev)
    if any(p[0] == "asyncio" for p in plan):
        with _peer(env, env.asyncio_peer) as ap:
            for setup, direction, proto, size in plan:
                if setup != "asyncio":
                    continue
                if direction == "stack-server":
                    ev = _kernel_client(env, env.ns_k, ap.pid, proto, size, VETH_C_IP, args)
                else:
                    ev = _peer_client(ap, proto, size, VETH_K_IP, args)
                record(setup, direction, proto, size, ev)
    return summaries, samples


# ---------------------------------------------------------------------- throughput


def throughput_plan(args: Any) -> list[tuple[str, str]]:
    plan = [(m, d) for m in args.modes for d in ("stack-send", "stack-receive")]
    plan += [("kernel", "kernel"), ("asyncio", "stack-send"), ("asyncio", "stack-receive")]
    return plan


def _bulk_summary(
    setup: str, direction: str, nbytes: int, expect: str, ev: dict, stack_side: str | None
) -> dict:
    sink = ev["sink"]
    if sink["bytes"] != nbytes or sink["sha256"] != expect:
        raise BenchError(
            f"bulk {setup} {direction}: {sink['bytes']} bytes with sha256 {sink['sha256'][:16]}"
            f"..., expected {nbytes} bytes with {expect[:16]}..."
        )
    secs = sink["wall_ns"] / 1e9
    send_cpu, recv_cpu = ev["sender_cpu_ns"] / 1e9, sink["cpu_ns"] / 1e9
    cpu = {"send": send_cpu, "receive": recv_cpu, None: recv_cpu}[stack_side]
    mb = nbytes / 1e6
    return {
        "bench": "throughput", "setup": setup, "direction": direction, "bytes": nbytes,
        "seconds": secs, "mbps": mb / secs if secs > 0 else 0.0, "cpu_s": cpu,
        "cpu_s_per_mb": cpu / mb, "sender_cpu_s": send_cpu, "receiver_cpu_s": recv_cpu,
        "sha256_ok": True,
    }  # fmt: skip


def run_throughput(env: BenchEnv, args: Any, progress: Progress) -> tuple[list[dict], dict]:
    """Bulk TCP transfer each direction per mode, plus the kernel and asyncio baselines.

    MB/s is the receiver's (first byte to EOF); CPU is the process under test's for the
    transfer (the stack's when it sends or receives; the kernel baseline's receiver)."""
    n = args.bytes
    expect = bulk_sha256(args.seed, n)
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
        with _peer(env, lambda m=mode: env.stack_peer(m)) as sp:
            ev = peer_send(sp, TAP_KERNEL_IP)
            out.append(_bulk_summary(mode, "stack-send", n, expect, ev, "send"))
            progress(f"{mode} stack-send")
            ev = kernel_send(env.ns_k, STACK_IP)
            out.append(_bulk_summary(mode, "stack-receive", n, expect, ev, "receive"))
            progress(f"{mode} stack-receive")
    ev = kernel_send(env.ns_c, VETH_K_IP)
    out.append(_bulk_summary("kernel", "kernel", n, expect, ev, None))
    progress("kernel")
    with _peer(env, env.asyncio_peer) as ap:
        ev = peer_send(ap, VETH_K_IP)
        out.append(_bulk_summary("asyncio", "stack-send", n, expect, ev, "send"))
        progress("asyncio stack-send")
        ev = kernel_send(env.ns_k, VETH_C_IP)
        out.append(_bulk_summary("asyncio", "stack-receive", n, expect, ev, "receive"))
        progress("asyncio stack-receive")
    return out, {}


# ------------------------------------------------------------------------ livelock


def run_livelock(env: BenchEnv, args: Any, progress: Progress) -> tuple[list[dict], dict]:
    """Offer increasing UDP rates to the stack's sink application; count what it consumes.

    Delivered = datagrams the application task took off its queue during the blast and a
    short drain afterwards, divided by the blast's duration."""
    out: list[dict] = []
    assert env.ns_k is not None
    timeout = args.duration + SLACK
    for mode in args.modes:
        with _peer(env, lambda m=mode: env.stack_peer(m)) as sp:
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
                out.append({
                    "bench": "livelock", "setup": mode, "target_pps": rate,
                    "sent": ev["sent"], "send_errors": ev["send_errors"], "seconds": el,
                    "offered_pps": ev["offered_pps"], "delivered": consumed,
                    "delivered_pps": consumed / el if el > 0 else 0.0,
                    "stack_received": c1["received"] - c0["received"],
                    "app_queue_dropped": c1["dropped"] - c0["dropped"],
                    "tap_dropped": drop1 - drop0 if drop0 >= 0 and drop1 >= 0 else -1,
                    "cpu_s": (cpu1 - cpu0) / 1e9,
                    "cpu_util": (cpu1 - cpu0) / 1e9 / (el + args.drain),
                })  # fmt: skip
                progress(f"{mode} {rate} pps")
    return out, {}


PLANS: dict[str, Callable[[Any], list]] = {
    "latency": latency_plan,
    "throughput": throughput_plan,
    "livelock": lambda a: [(m, r) for m in a.modes for r in a.rates],
}
RUNNERS = {"latency": run_latency, "throughput": run_throughput, "livelock": run_livelock}
