"""``anp bench preload``: a C client on the stack through the LD_PRELOAD library vs the same
client on kernel sockets, in one run.

    anp bench preload [--modes interrupt,adaptive] [--count 2000] [--warmup 200]
                      [--bytes 64M] [--quick] [--out DIR]
                      [--queues 1,2 [--conns 64] [--seconds 4]]

The client is ``tests/apps/c/rr_bench.c``, compiled with gcc at the start of the run; the
server is the same program (``rr_bench serve``: echo 7, sink 9, source 19) on kernel
sockets in the namespace K of :class:`~anp_async.bench.procs.BenchEnv`. Each phase:

- ``kernel``: the client in namespace C, to the server over the veth (kernel <-> kernel);
- ``preload-MODE``, stack-client: ``anp run --mode MODE --isolate -- sh -c "rr_bench rr
  ...; rr_bench bulk-send ...; rr_bench bulk-recv ..."`` inside K: the client's sockets are
  the stack's, served over the library's IPC by the anp process; the anp process's CPU is
  sampled at the client's warm-up mark and after each result;
- ``preload-MODE``, stack-server: ``anp run ... -- rr_bench serve 10.0.0.2`` and the
  kernel's C client in K over the TAP (anp's CPU sampled around each test);
- ``inprocess-MODE``: the same stack without the library (``bench.stack_peer``, the path
  ``anp bench latency`` measures): its asyncio client to the C echo server, and the
  kernel's C client to its asyncio echo server.
- ``preload-xQ`` (with ``--queues``): a C epoll echo server (``mq_load serve``) under
  ``anp run --queues Q`` -- Q stack workers on a multi-queue TAP, the program's listener
  on every one of them (:mod:`anp_async.preload.siblings`) -- and the kernel's lean load
  generator (``mq_load rr``: ``--conns`` connections of 64-byte requests, one thread)
  against it: the aggregate request rate, with the CPU of each worker, of the program and
  of the supervisor, per queue count.

The IPC's cost per request is read off the same run: the anp process's CPU per request on
the preload path (stack + socket-API server + pumping, no application) against the
in-process stack's (stack + asyncio client application); the client's own CPU per request
through the library (socketpair instead of a kernel TCP socket) against the same client on
kernel sockets; and the preload client's p50 against the kernel client's. Every byte is checked by the C programs; any failure aborts
the run with nothing reported. With ``--rounds N`` every setup runs N times, interleaved
(a busy spell of the machine hits all setups alike), and each setup's best round is
reported (:func:`best_rows`); every round stays in results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .apps import BenchError
from .common import proc_cpu_ns
from .procs import STACK_IP, TAP_KERNEL_IP, VETH_K_IP, BenchEnv, Peer

HELP = "a C client through the LD_PRELOAD library vs on kernel sockets: 64 B RR, bulk, IPC cost"
REPO = Path(__file__).resolve().parent.parent.parent
C_SOURCE = REPO / "tests" / "apps" / "c" / "rr_bench.c"
MODES = ("interrupt", "coalesce", "poll", "adaptive")
#: Seconds a phase may stay silent before the run fails.
PHASE_TIMEOUT = 120.0


def build_client(out_dir: Path) -> str:
    """Compile ``rr_bench`` with gcc into ``out_dir``; BenchError if that is impossible."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise BenchError("gcc not found: run scripts/setup.sh (it installs gcc)")
    if not C_SOURCE.exists():
        raise BenchError(f"{C_SOURCE} not found (anp bench preload runs from the source tree)")
    exe = out_dir / "rr_bench"
    res = subprocess.run(
        [cc, "-O2", "-Wall", "-pthread", "-o", str(exe), str(C_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise BenchError(f"gcc failed for {C_SOURCE}:\n{res.stderr}")
    return str(exe)


def _anp() -> str:
    import sys

    return os.path.join(os.path.dirname(sys.executable), "anp")


def _events(peer: Peer, want: int, cpu_pid: int | None = None) -> list[dict[str, Any]]:
    """The next ``want`` result/warm events of ``peer``, each stamped (``anp_cpu_ns``) with
    the CPU time of process ``cpu_pid`` (default: ``peer``'s own) when it arrived. Other
    output lines (the program's or anp's) are skipped."""
    pid = peer.pid if cpu_pid is None else cpu_pid
    out: list[dict[str, Any]] = []
    while len(out) < want:
        line = peer.read_line(PHASE_TIMEOUT).strip()
        cpu = proc_cpu_ns(pid)
        if line == "WARM":
            out.append({"event": "warm", "anp_cpu_ns": cpu})
            continue
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if ev.get("event") in ("result", "ready"):
            ev["anp_cpu_ns"] = cpu
            out.append(ev)
    return out


def _rr_row(
    setup: str, direction: str, ev: dict[str, Any], stack_cpu_ns: int | None
) -> dict[str, Any]:
    n = ev["count"] or 1
    row = {
        "bench": "preload", "test": "tcp_rr", "setup": setup, "direction": direction,
        "size": ev["size"], "count": ev["count"], "mean_us": ev["mean_us"],
        "p50_us": ev["p50_us"], "p90_us": ev["p90_us"], "p99_us": ev["p99_us"],
        "p99.9_us": ev["p99.9_us"], "max_us": ev["max_us"], "rate_rps": ev["rate_rps"],
        "client_cpu_us_per_req": ev["cpu_ns"] / n / 1e3,
        "stack_cpu_us_per_req": stack_cpu_ns / n / 1e3 if stack_cpu_ns is not None else None,
        "_samples": ev.get("samples_ns"),
    }  # fmt: skip
    return row


def _bulk_row(
    setup: str, direction: str, ev: dict[str, Any], stack_cpu_ns: int | None
) -> dict[str, Any]:
    """``test`` names what the client did (bulk_send: the client sent the bytes)."""
    mb = ev["bytes"] / 1e6
    return {
        "bench": "preload", "test": f"bulk_{ev['direction']}", "setup": setup,
        "direction": direction, "bytes": ev["bytes"], "seconds": ev["wall_ns"] / 1e9,
        "mbps": ev["mbps"], "client_cpu_s_per_mb": ev["cpu_ns"] / 1e9 / mb,
        "stack_cpu_s_per_mb": stack_cpu_ns / 1e9 / mb if stack_cpu_ns is not None else None,
    }  # fmt: skip


def _client_jobs(exe: str, host: str, args: argparse.Namespace) -> list[list[str]]:
    """The three client runs: 64 B RR to echo (7), bulk to the sink (9), from the source (19)."""
    return [
        [exe, "rr", host, "7", "64", str(args.count), str(args.warmup)],
        [exe, "bulk-send", host, "9", str(args.bytes)],
        [exe, "bulk-recv", host, "19", str(args.bytes)],
    ]


def _kernel_clients(
    env: BenchEnv, ns: Any, exe: str, host: str, args: argparse.Namespace,
    setup: str, direction: str, cpu_pid: int | None, rr_only: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """The C client on kernel sockets in ``ns`` against ``host``; the CPU of ``cpu_pid``
    (the process serving ``host``, if it is under test) is sampled around each test."""
    rows = []
    jobs = _client_jobs(exe, host, args)[: 1 if rr_only else 3]
    for i, job in enumerate(jobs):
        cpu0 = proc_cpu_ns(cpu_pid) if cpu_pid is not None else 0
        p = Peer(f"client_{setup}_{direction}_{i}", ["ip", "netns", "exec", ns.name, *job],
                 env.log_dir)  # fmt: skip
        env.peers.append(p)
        try:
            evs = _events(p, 2 if i == 0 else 1, cpu_pid)
        finally:
            env.stop(p)
        if i == 0:
            cpu0 = evs[0]["anp_cpu_ns"]  # the warm-up mark
        ev = evs[-1]
        cpu = ev["anp_cpu_ns"] - cpu0 if cpu_pid is not None else None
        row = _rr_row if i == 0 else _bulk_row
        rows.append(row(setup, direction, ev, cpu))
    return rows


def run_kernel(env: BenchEnv, exe: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The client on kernel sockets in C, the server in K, over the veth."""
    assert env.ns_c is not None
    return _kernel_clients(env, env.ns_c, exe, VETH_K_IP, args, "kernel", "kernel", None)


def _anp_run(env: BenchEnv, mode: str, program: list[str]) -> list[str]:
    assert env.ns_k is not None
    return [
        "ip", "netns", "exec", env.ns_k.name, _anp(), "run", "--tap", env.tap,
        "--ip", f"{STACK_IP}/24", "--peer", f"{TAP_KERNEL_IP}/24", "--mode", mode,
        "--isolate", "--", *program,
    ]  # fmt: skip


def run_preload(
    env: BenchEnv, exe: str, mode: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The client through the library: one ``anp run`` (one stack) for all three tests."""
    script = " && ".join(" ".join(a) for a in _client_jobs(exe, TAP_KERNEL_IP, args))
    p = Peer(f"preload_{mode}", _anp_run(env, mode, ["sh", "-c", script]), env.log_dir)
    env.peers.append(p)
    try:
        warm, rr, send, recv = _events(p, 4)
        status = p.proc.wait(timeout=PHASE_TIMEOUT)
    finally:
        env.stop(p)
    if status != 0:
        raise BenchError(f"anp run (mode {mode}) exited with status {status}")
    setup, d = f"preload-{mode}", "stack-client"
    return [
        _rr_row(setup, d, rr, rr["anp_cpu_ns"] - warm["anp_cpu_ns"]),
        _bulk_row(setup, d, send, send["anp_cpu_ns"] - rr["anp_cpu_ns"]),
        _bulk_row(setup, d, recv, recv["anp_cpu_ns"] - send["anp_cpu_ns"]),
    ]


def run_preload_server(
    env: BenchEnv, exe: str, mode: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """``rr_bench serve`` through the library on the stack; the kernel's C client in K."""
    assert env.ns_k is not None
    p = Peer(f"preload_server_{mode}", _anp_run(env, mode, [exe, "serve", STACK_IP]),
             env.log_dir)  # fmt: skip
    env.peers.append(p)
    try:
        _events(p, 1)  # {"event": "ready"}
        return _kernel_clients(
            env, env.ns_k, exe, STACK_IP, args, f"preload-{mode}", "stack-server", p.pid
        )
    finally:
        env.stop(p)


def run_inprocess(env: BenchEnv, exe: str, mode: str, args: argparse.Namespace) -> list[dict]:
    """The same stack without the library: the benchmark's asyncio client inside the
    stack's process to the C echo server, and the kernel's C client to the stack's asyncio
    echo server (``bench.stack_peer``)."""
    assert env.ns_k is not None
    sp = env.stack_peer(mode)
    try:
        cmd = {
            "cmd": "client", "proto": "tcp", "host": TAP_KERNEL_IP, "size": 64,
            "count": args.count, "warmup": args.warmup, "seed": 1, "time_limit": 60.0,
        }  # fmt: skip
        ev = sp.request(cmd, PHASE_TIMEOUT)
        if ev["event"] != "warm":
            raise BenchError(f"stack_peer answered {ev} before warm-up ended")
        ev = sp.read_event(PHASE_TIMEOUT)
        server_rows = _kernel_clients(
            env, env.ns_k, exe, STACK_IP, args, f"inprocess-{mode}", "stack-server", sp.pid,
            rr_only=True,
        )  # fmt: skip
    finally:
        env.stop(sp)
    from .common import latency_summary

    s = latency_summary(ev["samples_ns"], ev["wall_ns"])
    s.update(size=64, cpu_ns=ev["cpu_ns"], samples_ns=ev["samples_ns"])
    row = _rr_row(f"inprocess-{mode}", "stack-client", s, ev["cpu_ns"])
    row["client_cpu_us_per_req"] = None  # the client is the stack's process: counted there
    return [row, *server_rows]


def ipc_cost(rows: list[dict[str, Any]], modes: list[str]) -> list[dict[str, Any]]:
    """Per mode and direction: what going through the library adds per 64 B request."""
    by = {(r["test"], r["setup"], r["direction"]): r for r in rows}
    kernel = by[("tcp_rr", "kernel", "kernel")]
    out = []
    for mode in modes:
        for d in ("stack-client", "stack-server"):
            pre = by.get(("tcp_rr", f"preload-{mode}", d))
            inp = by.get(("tcp_rr", f"inprocess-{mode}", d))
            if pre is None or inp is None:
                continue
            # the program's own CPU: the client's, or (server side) not measured
            prog = pre["client_cpu_us_per_req"] if d == "stack-client" else None
            out.append({
                "bench": "preload", "test": "ipc_cost", "setup": mode, "direction": d,
                "anp_cpu_us_per_req_preload": pre["stack_cpu_us_per_req"],
                "stack_cpu_us_per_req_inprocess": inp["stack_cpu_us_per_req"],
                "extra_stack_cpu_us_per_req": pre["stack_cpu_us_per_req"]
                - inp["stack_cpu_us_per_req"],
                "client_cpu_us_per_req_preload": prog,
                "client_cpu_us_per_req_kernel": kernel["client_cpu_us_per_req"],
                "extra_client_cpu_us_per_req": prog - kernel["client_cpu_us_per_req"]
                if prog is not None else None,
                "p50_us_preload": pre["p50_us"], "p50_us_inprocess": inp["p50_us"],
                "p50_us_kernel": kernel["p50_us"],
                "p50_ratio_preload_to_kernel": pre["p50_us"] / kernel["p50_us"],
                "p50_ratio_preload_to_inprocess": pre["p50_us"] / inp["p50_us"],
            })  # fmt: skip
    return out


def execute(args: argparse.Namespace) -> dict[str, Any]:
    """Run every phase; return the results document (also written to ``args.out``)."""
    from . import report

    out: Path = args.out or report.default_out_dir("preload")
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    start, t0 = report.now_iso(), time.monotonic()
    rows: list[dict[str, Any]] = []
    samples: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="anp-bench-preload-") as bin_dir, BenchEnv(logs) as env:
        os.chmod(bin_dir, 0o755)
        exe = build_client(Path(bin_dir))
        assert env.ns_k is not None
        server = Peer("kernel_server", ["ip", "netns", "exec", env.ns_k.name, exe, "serve",
                                        "0.0.0.0"], logs)  # fmt: skip
        env.peers.append(server)
        server.read_event(30)
        load_exe = build_load(Path(bin_dir)) if args.queues else ""
        if args.queues:  # the kernel's server for the stack's many-connection client
            mq_server = Peer("kernel_mq_serve", ["ip", "netns", "exec", env.ns_k.name,
                             load_exe, "serve", "0.0.0.0", "7007", "7009", "36000"], logs)  # fmt: skip
            env.peers.append(mq_server)
            while mq_server.read_line(30).strip() != "ready":
                pass
        for rnd in range(args.rounds):  # rounds interleave, so a busy spell hits all setups
            this = run_kernel(env, exe, args)
            for mode in args.modes:
                this += run_preload(env, exe, mode, args)
                this += run_preload_server(env, exe, mode, args)
                this += run_inprocess(env, exe, mode, args)
            for q in args.queues or []:
                this.append(run_preload_queues(env, load_exe, q, args))
                this.append(run_preload_queues_client(env, load_exe, q, args))
            for r in this:
                r["round"] = rnd
            rows += this
    all_rounds = rows
    rows = best_rows(all_rounds)
    for r in rows:
        if r.get("_samples") is not None:
            samples[f"tcp_rr/{r['setup']}/{r['direction']}"] = r["_samples"]
    for r in all_rounds:
        r.pop("_samples", None)
    rows += ipc_cost(rows, args.modes)
    rows += scale_ratios(rows)
    doc: dict[str, Any] = {
        "benchmark": "preload",
        **report.machine_info(),
        "parameters": {k: v for k, v in vars(args).items() if k in PARAMS},
        "seed": 1,
        "start": start,
        "end": report.now_iso(),
        "duration_s": time.monotonic() - t0,
        "summaries": rows,
        "rounds": all_rounds if args.rounds > 1 else [],
        "plots": [],
    }
    report.write_results(out, doc, samples)
    doc["out"] = str(out)
    return doc


PARAMS = ("modes", "count", "warmup", "bytes", "rounds", "quick", "queues", "conns", "seconds")


def build_load(out_dir: Path) -> str:
    """The load generator of ``anp bench scale`` (``tests/apps/c/mq_load.c``)."""
    from .scale import build_client as build_mq_load

    return build_mq_load(out_dir)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children ...)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def run_preload_queues(
    env: BenchEnv, load: str, queues: int, args: argparse.Namespace
) -> dict[str, Any]:
    """``mq_load serve`` under ``anp run --queues Q``; ``mq_load rr`` from the kernel."""
    from .scale import _client, cpu_seconds, loadavg

    assert env.ns_k is not None
    life = args.seconds + 60
    argv = _anp_run(env, "interrupt", [load, "serve", STACK_IP, "7", "9", str(life)])
    argv[argv.index("--isolate") : argv.index("--isolate")] = ["--queues", str(queues)]
    p = Peer(f"preload_x{queues}", argv, env.log_dir)
    env.peers.append(p)
    try:
        while p.read_line(PHASE_TIMEOUT).strip() != "ready":
            pass
        workers, prog = _program_pids(p.pid, f"{load} serve", queues)
        pids = [p.pid, *workers, prog]
        load0, c0, t0 = loadavg(), [cpu_seconds(q) for q in pids], time.monotonic()
        rr = _client(
            env.ns_k,
            [load, "rr", STACK_IP, "7", str(args.conns), "64", str(args.seconds), "1"],
            timeout=args.seconds + 60,
        )  # fmt: skip
        wall = time.monotonic() - t0
        cpu = [(cpu_seconds(q) - c) / wall for q, c in zip(pids, c0, strict=True)]
    finally:
        env.stop(p)
    return {
        "bench": "preload", "test": "tcp_rr_conns", "setup": f"preload-x{queues}",
        "direction": "stack-server", "queues": queues, "conns": args.conns,
        "rate_rps": rr["rate"], "per_conn_min": rr["per_conn_min"],
        "per_conn_max": rr["per_conn_max"], "anp_cpu": cpu[0] if queues > 1 else 0.0,
        "worker_cpu": cpu[1:-1],
        "program_cpu": cpu[-1], "client_cpu": rr["client_cpu"] / args.seconds, "load": load0,
    }  # fmt: skip


def _program_pids(anp_pid: int, needle: str, queues: int) -> tuple[list[int], int]:
    """(worker pids, the program's pid) below ``anp run``; --queues 1 is the one stack
    inside the anp process itself."""
    deadline = time.monotonic() + 30
    while True:
        tree = _descendants(anp_pid)
        workers = [q for q in tree if "anp_async.mq.worker" in _cmdline(q)] or [anp_pid]
        program = [q for q in tree if needle in _cmdline(q)]
        if len(workers) == queues and len(program) == 1:
            return workers, program[0]
        if time.monotonic() > deadline:
            raise BenchError(f"anp run --queues {queues}: found workers {workers}, program "
                             f"{program}")  # fmt: skip
        time.sleep(0.05)


def run_preload_queues_client(
    env: BenchEnv, load: str, queues: int, args: argparse.Namespace
) -> dict[str, Any]:
    """``mq_load rr`` under ``anp run --queues Q`` (its connects take turns between the
    workers) against the kernel's ``mq_load serve``; CPU over the client's whole run."""
    from .scale import cpu_seconds, loadavg

    job = [load, "rr", TAP_KERNEL_IP, "7007", str(args.conns), "64", str(args.seconds), "1"]
    argv = _anp_run(env, "interrupt", job)
    argv[argv.index("--isolate") : argv.index("--isolate")] = ["--queues", str(queues)]
    p = Peer(f"preload_client_x{queues}", argv, env.log_dir)
    env.peers.append(p)
    try:
        workers, _ = _program_pids(p.pid, f"{load} rr", queues)
        pids = [p.pid, *workers]
        load0, c0, t0 = loadavg(), [cpu_seconds(q) for q in pids], time.monotonic()
        # Sampled shortly before the client ends (its processes go with it): the window
        # covers its connects, the warm-up second and most of the measured time.
        time.sleep(max(0.5, 1 + args.seconds - 0.3 - (time.monotonic() - t0)))
        wall = time.monotonic() - t0
        cpu = [(cpu_seconds(q) - c) / wall for q, c in zip(pids, c0, strict=True)]
        while True:
            line = p.read_line(args.seconds + PHASE_TIMEOUT).strip()
            if line.startswith("{") and '"rate"' in line:
                rr = json.loads(line)
                break
        status = p.proc.wait(timeout=PHASE_TIMEOUT)
    finally:
        env.stop(p)
    if status != 0:
        raise BenchError(f"anp run --queues {queues} -- mq_load rr exited with status {status}")
    return {
        "bench": "preload", "test": "tcp_rr_conns", "setup": f"preload-x{queues}",
        "direction": "stack-client", "queues": queues, "conns": args.conns,
        "rate_rps": rr["rate"], "per_conn_min": rr["per_conn_min"],
        "per_conn_max": rr["per_conn_max"], "anp_cpu": cpu[0] if queues > 1 else 0.0,
        "worker_cpu": cpu[1:], "program_cpu": rr["client_cpu"] / args.seconds,
        "client_cpu": rr["client_cpu"] / args.seconds, "load": load0,
    }  # fmt: skip


def scale_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each queue count's aggregate rate over one worker's (best rounds of the same run),
    for the server and the client on the stack."""
    conns = {(r["direction"], r["queues"]): r for r in rows if r["test"] == "tcp_rr_conns"}
    out = []
    for (d, q), r in sorted(conns.items()):
        one = conns.get((d, 1))
        if q != 1 and one is not None:
            out.append({
                "bench": "preload", "test": "queues_ratio", "setup": f"preload-x{q}",
                "direction": d, "queues": q, "rate_ratio_to_x1": r["rate_rps"] / one["rate_rps"],
            })  # fmt: skip
    return out


def best_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (test, setup, direction): the least disturbed round (lowest p50 for RR, highest
    MB/s for bulk), kept whole so its numbers belong together; first-seen order. On a
    shared machine interference only ever adds time -- here it comes in spells that double
    a phase's CPU per request, for the stack with and without the library alike -- so the
    best round is the one that measures the setup rather than its neighbours."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["test"], r["setup"], r["direction"]), []).append(r)
    out = []
    for group in groups.values():
        if group[0]["test"] == "tcp_rr":
            out.append(min(group, key=lambda r: r["p50_us"]))
        elif group[0]["test"] == "tcp_rr_conns":
            out.append(max(group, key=lambda r: r["rate_rps"]))
        else:
            out.append(max(group, key=lambda r: r["mbps"]))
    return out


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The run's figures as plain-text tables."""
    lines = [
        "TCP 64 B request/response: C client rr_bench / C server rr_bench serve; in-process = "
        "the stack's own asyncio client / echo server",
        f"{'setup':<22}{'direction':<14}{'p50 us':>8}{'p90 us':>8}{'p99 us':>9}{'mean us':>9}"
        f"{'req/s':>9}{'client CPU us/req':>19}{'stack CPU us/req':>18}",
    ]
    for r in rows:
        if r["test"] == "tcp_rr":
            lines.append(
                f"{r['setup']:<22}{r['direction']:<14}{_fmt(r['p50_us']):>8}"
                f"{_fmt(r['p90_us']):>8}{_fmt(r['p99_us']):>9}{_fmt(r['mean_us']):>9}"
                f"{_fmt(r['rate_rps'], 0):>9}{_fmt(r['client_cpu_us_per_req']):>19}"
                f"{_fmt(r['stack_cpu_us_per_req']):>18}"
            )
    lines += [
        "",
        "Bulk TCP (test = what the C client did; stack CPU = the anp process)",
        f"{'setup':<22}{'direction':<14}{'test':<14}{'MB/s':>9}{'client CPU s/MB':>17}"
        f"{'stack CPU s/MB':>16}",
    ]
    for r in rows:
        if r["test"].startswith("bulk_"):
            lines.append(
                f"{r['setup']:<22}{r['direction']:<14}{r['test']:<14}{_fmt(r['mbps']):>9}"
                f"{_fmt(r['client_cpu_s_per_mb'], 4):>17}{_fmt(r['stack_cpu_s_per_mb'], 4):>16}"
            )
    cost = [r for r in rows if r["test"] == "ipc_cost"]
    if cost:
        lines += [
            "",
            "IPC cost per 64 B request (same run): anp process CPU with the library vs the "
            "in-process stack; client CPU with the library vs on kernel sockets",
            f"{'mode':<11}{'direction':<14}{'anp CPU/req':>12}{'in-proc CPU/req':>16}"
            f"{'extra':>8}{'client CPU/req lib/kernel':>27}{'p50 lib/kernel':>16}"
            f"{'p50 lib/in-proc':>17}",
        ]
        for r in cost:
            client = (
                f"{_fmt(r['client_cpu_us_per_req_preload'], 2)} / "
                f"{_fmt(r['client_cpu_us_per_req_kernel'], 2)}"
                if r["client_cpu_us_per_req_preload"] is not None
                else "-"
            )
            lines.append(
                f"{r['setup']:<11}{r['direction']:<14}"
                f"{_fmt(r['anp_cpu_us_per_req_preload']):>12}"
                f"{_fmt(r['stack_cpu_us_per_req_inprocess']):>16}"
                f"{_fmt(r['extra_stack_cpu_us_per_req']):>8}{client:>27}"
                f"{_fmt(r['p50_ratio_preload_to_kernel'], 2) + 'x':>16}"
                f"{_fmt(r['p50_ratio_preload_to_inprocess'], 2) + 'x':>17}"
            )
        lines.append("(all CPU figures in us per request)")
    conns = [r for r in rows if r["test"] == "tcp_rr_conns"]
    if conns:
        lines += [
            "",
            "anp run --queues Q: stack-server = C epoll echo server (mq_load serve) on the stack, "
            "the kernel's mq_load rr; stack-client = mq_load rr on the stack, the kernel's "
            "mq_load serve (64 B requests; best round); CPU in cores (program = the one on "
            "the stack, client = the load generator's own count); us/req = the workers' CPU "
            "per request (far less sensitive to the machine's load than the rate)",
            f"{'setup':<14}{'direction':<14}{'conns':>6}{'req/s':>10}{'workers CPU':>20}"
            f"{'us/req':>8}{'program CPU':>13}{'anp CPU':>9}{'client CPU':>12}{'load':>6}",
        ]
        for r in conns:
            w = "+".join(f"{c:.2f}" for c in r["worker_cpu"])
            lines.append(
                f"{r['setup']:<14}{r['direction']:<14}{r['conns']:>6}{r['rate_rps']:>10.0f}{w:>20}"
                f"{sum(r['worker_cpu']) / max(r['rate_rps'], 1) * 1e6:>8.1f}"
                f"{r['program_cpu']:>13.2f}{r['anp_cpu']:>9.2f}{r['client_cpu']:>12.2f}"
                f"{r['load']:>6.1f}"
            )
        for r in rows:
            if r["test"] == "queues_ratio":
                lines.append(
                    f"{r['setup']} {r['direction']}: {r['rate_ratio_to_x1']:.2f}x the rate of x1"
                )
    return "\n".join(lines)


def _csv_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise argparse.ArgumentTypeError(f"modes must be among {', '.join(MODES)}")
    return modes


def _csv_queues(text: str) -> list[int]:
    try:
        qs = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: queue counts like 1,2") from None
    if not qs or any(not 1 <= q <= 16 for q in qs):
        raise argparse.ArgumentTypeError(f"{text!r}: queue counts 1..16")
    return qs


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``anp bench preload``."""
    from .cli import _size

    p.add_argument("--modes", type=_csv_modes, default=None,
                   help="receive modes of the stack (default interrupt,adaptive; --quick: interrupt)")  # fmt: skip
    p.add_argument("--count", type=int, default=None, help="measured requests (default 2000)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up requests (default 200)")
    p.add_argument("--bytes", type=_size, default=None, help="bytes per bulk transfer (64M)")
    p.add_argument("--rounds", type=int, default=None,
                   help="repeat every setup this often, interleaved; each setup's best round "
                        "is reported (default 3; --quick: 1)")  # fmt: skip
    p.add_argument("--queues", type=_csv_queues, default=None,
                   help="also the C echo server under anp run --queues Q for each Q (e.g. 1,2) "
                        "with --conns kernel connections")  # fmt: skip
    p.add_argument("--conns", type=int, default=64, help="connections with --queues (64)")
    p.add_argument("--seconds", type=int, default=4, help="measured seconds with --queues (4)")
    p.add_argument("--quick", action="store_true", help="small run, well under a minute")
    p.add_argument("--out", type=Path, help="results folder (default bench/results/...)")


def _defaults(args: argparse.Namespace) -> None:
    for key, normal, quick in (
        ("modes", ["interrupt", "adaptive"], ["interrupt"]),
        ("count", 2000, 200),
        ("warmup", 200, 20),
        ("bytes", 64 << 20, 4 << 20),
        ("rounds", 3, 1),
    ):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else normal)


def run(args: argparse.Namespace) -> int:
    """``anp bench preload``: run, print the tables, return the exit status."""
    import sys

    if os.geteuid() != 0:
        print("anp: error: anp bench needs root (network namespaces, /dev/net/tun).",
              file=sys.stderr)  # fmt: skip
        return 2
    _defaults(args)
    try:
        doc = execute(args)
    except BenchError as e:
        print(f"anp: error: benchmark aborted, nothing reported: {e}", file=sys.stderr)
        return 1
    print(format_table(doc["summaries"]))
    print(f"results: {doc['out']}")
    return 0
