"""``anp bench scale``: aggregate TCP rate per number of stack workers (multi-queue TAP).

For each queue count (``--queues 1,2``) a :class:`~anp_async.mq.MultiQueueHost` runs in a
fresh namespace with a TCP echo (port 7) and discard (port 9) on every worker, and the
small C load generator ``tests/apps/c/mq_load.c`` (one thread, epoll; it needs little CPU)
runs inside the namespace:

- request/response: ``--conns`` connections, each a closed loop of ``--size``-byte
  requests and their echoes; the aggregate requests per second over ``--seconds``;
- bulk: ``--bulk-conns`` connections writing to the discard server for ``--bulk-seconds``,
  then half-closing and waiting for the server's FIN; the aggregate MB/s the stack took.

Beside it, in the same run, the kernel: the same client against ``mq_load serve`` (one
epoll thread) in a second namespace across a veth pair. Every setup runs ``--rounds``
times interleaved (1, 2, kernel, 1, 2, kernel, ...); the table shows the median round, the
CPU each worker used (share of one core over the measured wall time), the client's CPU
and the load average (``/proc/loadavg``) when each round started -- other programs share
the machine's cores. Output: ``results.json`` and ``scale.png`` (rate against workers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..nic.netns import Netns, unique_name, veth_pair
from .apps import BenchError
from .report import _plt, default_out_dir

HELP = "aggregate TCP request/response rate and bulk throughput per number of stack workers"
C_SOURCE = Path(__file__).resolve().parents[2] / "tests" / "apps" / "c" / "mq_load.c"
STACK_IP = "10.0.0.2"
KERNEL_SERVER = "10.0.1.2"


def configure(p: argparse.ArgumentParser) -> None:
    """The arguments of ``anp bench scale``."""
    p.add_argument("--queues", default="1,2", help="queue (worker) counts, comma separated")
    p.add_argument("--conns", type=int, default=64, help="request/response connections (64)")
    p.add_argument("--size", type=int, default=64, help="request size in bytes (64)")
    p.add_argument("--seconds", type=int, default=4, help="measured seconds per run (4)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up seconds per run (1)")
    p.add_argument("--bulk-conns", type=int, default=8, help="bulk connections (8)")
    p.add_argument("--bulk-seconds", type=int, default=3, help="bulk seconds (3); 0: no bulk")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    p.add_argument("--mode", default="interrupt", help="the workers' receive mode")
    p.add_argument(
        "--pin", choices=("off", "on", "both"), default="off",
        help="pin worker i to CPU i (HostConfig.pin_cpus); both: every worker count both ways, "
        "interleaved (default off)",
    )  # fmt: skip
    p.add_argument("--no-kernel", action="store_true", help="skip the kernel baseline")
    p.add_argument(
        "--steering-check", action="store_true",
        help="also open connections from the workers with the kernel's automq and with the "
        "steering program, and count those that work",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="1 round, 2 s, 16 conns (smoke test)")
    p.add_argument("--out", type=Path, help="results folder (default bench/results/...)")


def parse_queues(text: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4]; ValueError for anything else."""
    try:
        qs = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--queues {text!r}: comma-separated integers like 1,2") from None
    if not qs or any(not 1 <= q <= 64 for q in qs):
        raise ValueError(f"--queues {text!r}: each count 1..64")
    return qs


def build_client(out_dir: Path) -> str:
    """Compile ``mq_load`` with gcc into ``out_dir``."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise BenchError("gcc not found: run scripts/setup.sh (it installs gcc)")
    exe = out_dir / "mq_load"
    res = subprocess.run(
        [cc, "-O2", "-Wall", "-o", str(exe), str(C_SOURCE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        raise BenchError(f"gcc failed for {C_SOURCE}:\n{res.stderr}")
    return str(exe)


def loadavg() -> float:
    """The 1-minute load average."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client(ns: Netns, argv: list[str], timeout: float) -> dict[str, Any]:
    res = ns.run(argv, timeout=timeout)
    if res.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed: {res.stderr.strip()}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def _measure(
    ns: Netns, exe: str, host: str, args: argparse.Namespace, pids: list[int]
) -> dict[str, Any]:
    """One RR run and one bulk run against ``host``; CPU of ``pids`` around each."""
    row: dict[str, Any] = {"load": loadavg()}
    c0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
    rr = _client(
        ns,
        [exe, "rr", host, "7", str(args.conns), str(args.size), str(args.seconds),
         str(args.warmup)],
        timeout=args.seconds + args.warmup + 60,
    )  # fmt: skip
    wall = time.monotonic() - t0
    row["rate"] = rr["rate"]
    row["per_conn_min"], row["per_conn_max"] = rr["per_conn_min"], rr["per_conn_max"]
    row["client_cpu"] = rr["client_cpu"] / args.seconds
    row["worker_cpu"] = [(cpu_seconds(p) - c) / wall for p, c in zip(pids, c0, strict=True)]
    if args.bulk_seconds > 0:
        c0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
        bulk = _client(
            ns, [exe, "bulk", host, "9", str(args.bulk_conns), str(args.bulk_seconds)],
            timeout=args.bulk_seconds + 60,
        )  # fmt: skip
        wall = time.monotonic() - t0
        row["mbps"] = bulk["mbps"]
        row["bulk_worker_cpu"] = [
            (cpu_seconds(p) - c) / wall for p, c in zip(pids, c0, strict=True)
        ]
    return row


async def _stack_round(
    exe: str, queues: int, args: argparse.Namespace, pinned: bool = False
) -> dict[str, Any]:
    from ..mq import HostConfig, MultiQueueHost

    with Netns.create(unique_name("anp-scale")) as ns:
        cfg = HostConfig(
            tap="anpmq0", queues=queues, netns=ns, echo=7, sink=9, mode=args.mode,
            restart=False, pin_cpus=pinned,
        )  # fmt: skip
        async with MultiQueueHost(cfg) as host:
            pids = [p for p in host.pids() if p is not None]
            row = await asyncio.to_thread(_measure, ns, exe, STACK_IP, args, pids)
            if host.deaths:
                raise BenchError("; ".join(d.describe() for d in host.deaths))
    row["setup"] = f"stack x{queues}" + (" pinned" if pinned else "")
    row["queues"] = queues
    row["pinned"] = pinned
    return row


def _kernel_round(exe: str, args: argparse.Namespace) -> dict[str, Any]:
    with (
        Netns.create(unique_name("anp-scalec")) as client,
        Netns.create(unique_name("anp-scales")) as server,
    ):
        veth_pair(client, server, "10.0.1.1/24", f"{KERNEL_SERVER}/24")
        budget = args.seconds + args.warmup + args.bulk_seconds + 60
        srv = server.popen(
            [exe, "serve", KERNEL_SERVER, "7", "9", str(budget)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert srv.stdout is not None
            if srv.stdout.readline().strip() != "ready":
                raise BenchError("the kernel-side server did not start")
            row = _measure(client, exe, KERNEL_SERVER, args, [srv.pid])
        finally:
            srv.kill()
            srv.wait()
    row["setup"] = "kernel"
    row["queues"] = 0
    return row


def _handoff_echo(fd: int, count: int) -> None:
    """The receiving worker's side, as a worker would run it: an asyncio reader callback
    takes each frame and hands one back; exits after ``count``."""
    import socket as _socket

    sock = _socket.socket(fileno=fd)
    sock.setblocking(False)
    loop = asyncio.new_event_loop()
    left = [count]

    def on_frame() -> None:
        while True:
            try:
                frame = sock.recv(65536)
            except BlockingIOError:
                return
            sock.send(frame)
            left[0] -= 1
            if left[0] == 0:
                loop.stop()
                return

    loop.add_reader(fd, on_frame)
    loop.run_forever()


def measure_handoff(count: int = 20000, size: int = 128) -> dict[str, float]:
    """What handing a frame to the right worker would cost: a frame of ``size`` bytes goes
    from one Python process to another (an asyncio reader callback there, as in a worker)
    over a Unix datagram socketpair and back, ``count`` times. Per handoff: wall time
    (latency added) and the CPU of both processes."""
    import multiprocessing
    import socket as _socket

    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_handoff_echo, args=(b.fileno(), count))
    child.start()
    b.close()
    frame = bytes(size)
    self0 = time.process_time()
    c0 = cpu_seconds(child.pid or 0)
    t0 = time.perf_counter()
    for _ in range(count):
        a.send(frame)
        a.recv(65536)
    wall = time.perf_counter() - t0
    c1 = cpu_seconds(child.pid or 0)
    self1 = time.process_time()
    child.join(10)
    a.close()
    handoffs = 2 * count
    return {
        "latency_us": wall / handoffs * 1e6,
        "cpu_us": ((self1 - self0) + (c1 - c0)) / handoffs * 1e6,
    }


def measure_port_choice(queues: int = 2, count: int = 20000) -> float:
    """Microseconds one port choice with the steering filter takes (TcpHost.pick_port)."""
    from ..mq.worker import own_ports

    ok = own_ports(queues - 1, queues)
    import random as _random

    t0 = time.process_time()
    for _ in range(count):
        while not ok(_random.randrange(32768, 61000), 7):
            pass
    return (time.process_time() - t0) / count * 1e6


#: Connections each worker opens in the steering check.
PROBE_CONNS = 4
_probe_tasks: set[asyncio.Task[None]] = set()


async def _open_probe(stack: Any, index: int) -> None:
    """Worker hook of :func:`steering_check`: open PROBE_CONNS connections to the kernel's
    echo at 10.0.0.1:7, echo a line on each (3 s each), write how many worked."""
    out = os.path.join(os.environ["ANP_SCALE_PROBE_DIR"], f"w{index}.json")

    async def one(k: int) -> bool:
        try:
            r, w = await asyncio.wait_for(stack.open_connection("10.0.0.1", 7), 3)
            w.write(b"probe\n")
            ok = await asyncio.wait_for(r.readexactly(6), 3) == b"probe\n"
            w.close()
            return ok
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return False

    async def run() -> None:
        oks = await asyncio.gather(*(one(k) for k in range(PROBE_CONNS)))
        with open(out + ".tmp", "w") as f:
            json.dump({"ok": sum(oks), "of": len(oks)}, f)
        os.replace(out + ".tmp", out)

    task = asyncio.ensure_future(run())
    _probe_tasks.add(task)
    task.add_done_callback(_probe_tasks.discard)


async def _steering_round(exe: str, steering: bool, probe_dir: Path) -> dict[str, int]:
    from ..mq import HostConfig, MultiQueueHost

    with Netns.create(unique_name("anp-steer")) as ns:
        srv = ns.popen([exe, "serve", "0.0.0.0", "7", "9", "60"], stdout=subprocess.PIPE)
        try:
            cfg = HostConfig(
                tap="anpmq0", queues=2, netns=ns, steering=steering, restart=False,
                setup="anp_async.bench.scale:_open_probe",
            )  # fmt: skip
            os.environ["ANP_SCALE_PROBE_DIR"] = str(probe_dir)
            async with MultiQueueHost(cfg):
                files = [probe_dir / f"w{i}.json" for i in range(2)]
                deadline = time.monotonic() + 30
                while not all(f.exists() for f in files) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                docs = [json.loads(f.read_text()) for f in files if f.exists()]
        finally:
            srv.kill()
            srv.wait()
    for f in probe_dir.glob("w*.json"):
        f.unlink()
    return {"ok": sum(d["ok"] for d in docs), "of": 2 * PROBE_CONNS}


def steering_check(exe: str, out: Path) -> dict[str, dict[str, int]]:
    """Connections the stack opens from both workers, with the kernel's automq and with
    the steering program: how many of them work."""
    probe_dir = out / "probe"
    probe_dir.mkdir(exist_ok=True)
    return {
        name: asyncio.run(_steering_round(exe, steer, probe_dir))
        for name, steer in (("automq", False), ("steering program", True))
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median round per setup, with the rate relative to one worker."""
    out = []
    for setup in dict.fromkeys(r["setup"] for r in rows):
        rs = sorted((r for r in rows if r["setup"] == setup), key=lambda r: r["rate"])
        med = rs[len(rs) // 2]
        s = {
            "setup": setup,
            "queues": med["queues"],
            "rate": med["rate"],
            "rates": [r["rate"] for r in rows if r["setup"] == setup],
            "worker_cpu": med["worker_cpu"],
            "client_cpu": med["client_cpu"],
            "load": med["load"],
            "loads": [r["load"] for r in rows if r["setup"] == setup],
        }
        mb = [r["mbps"] for r in rows if r["setup"] == setup and "mbps" in r]
        if mb:
            s["mbps"] = statistics.median(mb)
        out.append(s)
    for s in out:
        s["pinned"] = s["setup"].endswith(" pinned")
    for s in out:
        # against one worker run the same way (pinned or not); the kernel against unpinned
        pin = s["pinned"]
        one = next((o["rate"] for o in out if o["queues"] == 1 and o["pinned"] == pin), None)
        one_mb = next((o.get("mbps") for o in out if o["queues"] == 1 and o["pinned"] == pin), None)
        ones = {
            r["round"]: r["rate"]
            for r in rows
            if r["queues"] == 1 and "round" in r and bool(r.get("pinned")) == pin
        }
        s["vs_one"] = s["rate"] / one if one else None
        s["mbps_vs_one"] = s["mbps"] / one_mb if one_mb and "mbps" in s else None
        # Each round's rate over the 1-worker rate of the same round (measured seconds
        # apart, under about the same load from other programs): their median.
        pairs = [
            r["rate"] / ones[r["round"]]
            for r in rows
            if r["setup"] == s["setup"] and ones.get(r.get("round", -1))
        ]
        s["round_ratios"] = pairs
        s["vs_one_paired"] = statistics.median(pairs) if pairs else None
    return out


def plot(out: Path, summary: list[dict[str, Any]]) -> str:
    """scale.png: aggregate RR rate (and bulk MB/s) against workers: every round as a dot,
    the median round as the line, linear scaling dotted, the kernel dashed (log scale: the
    kernel is an order of magnitude above)."""
    plt = _plt()
    stack = [s for s in summary if s["queues"] > 0 and not s.get("pinned")]
    pinned = [s for s in summary if s["queues"] > 0 and s.get("pinned")]
    kernel = next((s for s in summary if s["queues"] == 0), None)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [s["queues"] for s in stack]
    for s in stack:
        ax.scatter([s["queues"]] * len(s["rates"]), s["rates"], color="C0", alpha=0.4, s=12)
    ax.plot(xs, [s["rate"] for s in stack], "o-", color="C0", label="stack workers (median)")
    if pinned:
        for s in pinned:
            ax.scatter([s["queues"]] * len(s["rates"]), s["rates"], color="C2", alpha=0.4, s=12)
        ax.plot([s["queues"] for s in pinned], [s["rate"] for s in pinned], "s-", color="C2",
                label="pinned to CPUs (median)")  # fmt: skip
    if stack:
        base = next((s["rate"] for s in stack if s["queues"] == 1), stack[0]["rate"])
        ax.plot(xs, [base * x for x in xs], ":", color="grey", label="linear from 1 worker")
    if kernel:
        ax.axhline(kernel["rate"], color="C3", ls="--", label="kernel (1 epoll thread)")
    loads = ", ".join(f"{s['setup']} {s['load']:.1f}" for s in summary)
    ax.set_yscale("log")
    ax.set_xlabel("workers (TAP queues)")
    ax.set_ylabel("requests/s, all connections (log)")
    ax.set_title(f"TCP request/response, aggregate\nload avg: {loads}", fontsize=9)
    ax.set_xticks(xs)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    if any("mbps" in s for s in stack):
        ax2.plot(xs, [s.get("mbps", 0) for s in stack], "o-", label="stack workers (median)")
        if kernel and "mbps" in kernel:
            ax2.axhline(kernel["mbps"], color="C3", ls="--", label="kernel")
        ax2.set_xticks(xs)
        ax2.legend(fontsize=8)
    ax2.set_xlabel("workers (TAP queues)")
    ax2.set_ylabel("MB/s taken by the server")
    ax2.set_title("bulk TCP into the server, aggregate", fontsize=9)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=100)
    plt.close(fig)
    return str(out / "scale.png")


def table(summary: list[dict[str, Any]]) -> str:
    """The text table printed at the end."""
    lines = [
        f"{'setup':<16} {'RR req/s':>10} {'x one':>6} {'paired':>6} {'bulk MB/s':>10} {'x one':>6} "
        f"{'worker CPU (RR)':<20} {'us CPU/req':>10} {'client CPU':>10} {'load':>6}  rounds (req/s)",
    ]
    for s in summary:
        cpu = " ".join(f"{c * 100:.0f}%" for c in s["worker_cpu"])
        vs = f"{s['vs_one']:.2f}" if s["vs_one"] else "-"
        pv = f"{s['vs_one_paired']:.2f}" if s.get("vs_one_paired") else "-"
        mb = f"{s['mbps']:.0f}" if "mbps" in s else "-"
        mvs = f"{s['mbps_vs_one']:.2f}" if s.get("mbps_vs_one") else "-"
        rounds = ", ".join(f"{r:.0f}" for r in s["rates"])
        lines.append(
            f"{s['setup']:<16} {s['rate']:>10.0f} {vs:>6} {pv:>6} {mb:>10} {mvs:>6} {cpu:<20} "
            f"{s.get('worker_cpu_us_per_request') or 0:>10.0f} "
            f"{s['client_cpu'] * 100:>9.0f}% {s['load']:>6.2f}  {rounds}"
        )
    return "\n".join(lines)


def execute(args: argparse.Namespace) -> dict[str, Any]:
    """Run every round; return the results document (also written to ``results.json``)."""
    if args.quick:
        args.rounds, args.seconds, args.conns, args.bulk_seconds = 1, 2, 16, 1
    queues = parse_queues(args.queues)
    out: Path = args.out or default_out_dir("scale")
    out.mkdir(parents=True, exist_ok=True)
    exe = build_client(out)
    rows: list[dict[str, Any]] = []
    pins = {"off": [False], "on": [True], "both": [False, True]}[getattr(args, "pin", "off")]
    for rnd in range(args.rounds):
        for pinned in pins:
            for q in queues:
                row = asyncio.run(_stack_round(exe, q, args, pinned))
                row["round"] = rnd
                rows.append(row)
                print(f"round {rnd + 1}: {row['setup']}: {row['rate']:.0f} req/s, "
                      f"{row.get('mbps', 0):.0f} MB/s, load {row['load']:.2f}", flush=True)  # fmt: skip
        if not args.no_kernel:
            row = _kernel_round(exe, args)
            row["round"] = rnd
            rows.append(row)
            print(f"round {rnd + 1}: kernel: {row['rate']:.0f} req/s, "
                  f"{row.get('mbps', 0):.0f} MB/s, load {row['load']:.2f}", flush=True)  # fmt: skip
    summary = summarise(rows)
    handoff = measure_handoff()
    for srow in summary:
        n = [r for r in rows if r["setup"] == srow["setup"]]
        cpu = sum(sum(r["worker_cpu"]) for r in n) * (args.seconds + args.warmup)
        reqs = sum(r["rate"] for r in n) * args.seconds
        srow["worker_cpu_us_per_request"] = cpu / reqs * 1e6 if reqs else None
    steer: dict[str, Any] = {"handoff": handoff, "port_choice_us": measure_port_choice()}
    if args.steering_check:
        steer["opened_connections"] = steering_check(exe, out)
    doc: dict[str, Any] = {
        "bench": "scale",
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k in ("queues", "conns", "size", "seconds", "warmup", "bulk_conns",
                            "bulk_seconds", "rounds", "mode", "pin")},
        "cpus": os.cpu_count(),
        "rows": rows,
        "summary": summary,
        "steering": steer,
        "out": str(out),
    }  # fmt: skip
    doc["plot"] = plot(out, summary)
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    return doc


def run(args: argparse.Namespace) -> int:
    """``anp bench scale``: run, print the table and where the results are."""
    if os.geteuid() != 0:
        print("anp: error: anp bench scale needs root (namespaces, /dev/net/tun)", file=sys.stderr)
        return 2
    try:
        doc = execute(args)
    except (BenchError, ValueError) as e:
        print(f"anp: error: benchmark aborted: {e}", file=sys.stderr)
        return 1
    print(table(doc["summary"]))
    st = doc["steering"]
    per = [s["worker_cpu_us_per_request"] for s in doc["summary"] if s["queues"] > 0]
    print(
        f"handing a frame to another worker (Unix datagram, Python): "
        f"{st['handoff']['cpu_us']:.1f} us CPU and {st['handoff']['latency_us']:.1f} us "
        f"latency per frame; choosing a steered port: {st['port_choice_us']:.2f} us per "
        f"connection; a request costs the workers "
        + ", ".join(f"{p:.0f}" for p in per if p)
        + " us of CPU"
    )
    for name, r in st.get("opened_connections", {}).items():
        print(f"connections the workers opened, {name}: {r['ok']} of {r['of']} worked")
    print(f"results: {doc['out']}/results.json")
    print(f"plot: {doc['plot']}")
    return 0
