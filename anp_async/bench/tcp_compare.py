"""Loss recovery side by side: NewReno, SACK, SACK+RACK-TLP, and ECN marking instead of loss.

    anp bench tcp-compare [--seeds 1-40] [--loss 0.03] [--bulk-loss 0.01]
                          [--configs newreno,sack,rack,rack+ecn]
                          [--short 40x15k] [--bulk 2M] [--rate 20M] [--delay 0.01] [--json F]

Two stacks joined by the in-memory wire behind the seeded fault injector, run on the
simulator's virtual clock (``sim/loop.py``): a seed gives the same faults and the same
figures every time, a second of retransmission timeouts costs microseconds, and many seeds
fit in a minute. The link is a bottleneck as a router's would be: ``--rate`` each way with
a bounded queue, ``--delay`` each way, and random loss on every frame (data and ACKs):
``--loss`` for the short transfers, ``--bulk-loss`` for bulk. ``rack+ecn`` replaces the loss by CE marks with the same probability (RFC 3168:
an AQM router marks ECN-capable packets instead of dropping them).

Two workloads per seed and configuration:

- **short**: over one connection, ``N`` requests of 100 bytes each answered by a response
  of ``S`` bytes; the time from the request to the response's last byte. A lost tail
  costs NewReno and SACK a retransmission timeout; RACK-TLP probes after about 2 SRTT.
- **bulk**: ``--bulk`` bytes one way; goodput = bytes / (last byte in - connect).

Every byte is checked (sha256 or the exact response). The tables show, over all seeds,
the median and the spread (p10..p90, worst) of the short-transfer times, how many took
longer than 5 RTT (a lossless one takes about 1.3), timeouts and probes, and the bulk goodput's median with its p10..p90.
Nothing touches a real interface: no root needed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import sys
import time
from typing import Any

from anp_async import Stack, StackConfig, TcpConfig
from anp_async.nic.faults import FaultConfig, FaultyNic
from anp_async.nic.wire import Wire
from anp_async.sim.loop import SimEventLoop

from .common import number_arg

#: label -> (TcpConfig overrides, ECN marking instead of loss)
CONFIGS: dict[str, tuple[dict[str, Any], bool]] = {
    "newreno": ({"sack": False, "rack": False}, False),
    "sack": ({"sack": True, "rack": False}, False),
    "rack": ({"sack": True, "rack": True}, False),
    "rack+ecn": ({"sack": True, "rack": True, "ecn": True}, True),
}
PORT = 9100
#: Virtual seconds one workload may take before the run counts as stuck.
RUN_LIMIT = 600.0


def _size(text: str) -> int:
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("ib").rstrip("b")
    try:
        n = int(float(t[:-1]) * mult[t[-1]]) if t and t[-1] in mult else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 2M, 65536)") from None
    if not 1 <= n <= 1 << 30:
        raise argparse.ArgumentTypeError(f"{text!r}: bytes must be from 1 to 1G")
    return n


_loss = number_arg(
    float, lambda p: 0.0 <= p < 0.5, "{text!r} is not a loss probability in [0, 0.5)"
)



def _rate(text: str) -> float:
    t = text.strip().lower().removesuffix("bit/s").removesuffix("bps")
    mult = {"k": 1e3, "m": 1e6, "g": 1e9}
    try:
        r = float(t[:-1]) * mult[t[-1]] if t and t[-1] in mult else float(t)
    except ValueError:
        r = -1.0
    if not 1e3 <= r <= 1e11:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate from 1k to 100G bit/s")
    return r


_delay = number_arg(float, lambda d: 0.0 <= d <= 10.0, "{text!r} is not a delay from 0 to 10 s")



def _seeds(text: str) -> list[int]:
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        out = []
    if not out or len(out) > 100_000:
        raise ValueError(f"--seeds {text!r}: give 1 to 100000 seeds like 1-40 or 1,2,3")
    return out


def _faults(loss: float, ecn: bool, rate: float, delay: float, seed: int) -> FaultConfig:
    return FaultConfig(
        loss=0.0 if ecn else loss,
        ce_mark=loss if ecn else 0.0,
        delay=delay,
        rate_bps=rate,
        queue_limit=100,
        seed=seed,
        direction="tx",
    )


async def _pair(
    loop: SimEventLoop, tcp: TcpConfig, faults: FaultConfig
) -> tuple[Stack, Stack, list[FaultyNic]]:
    nic_a, nic_b = Wire.pair()
    fa = FaultyNic(nic_a, faults, loop)
    fb = FaultyNic(nic_b, FaultConfig(**{**_asdict(faults), "seed": faults.seed + 7919}), loop)
    a = Stack(StackConfig(nic=fa, ip="10.0.0.1/24", mode="interrupt", tcp=tcp))
    b = Stack(StackConfig(nic=fb, ip="10.0.0.2/24", mode="interrupt", tcp=tcp))
    a.start()
    b.start()
    loop.watch_fd(nic_a.fileno())
    loop.watch_fd(nic_b.fileno())
    return a, b, [fa, fb]


def _asdict(f: FaultConfig) -> dict[str, Any]:
    return {k: getattr(f, k) for k in f.__dataclass_fields__}


def _conn_counters(stack: Stack) -> dict[str, int]:
    tcp = stack.stats()["tcp"]
    return {
        k: int(tcp.get("conn_" + k, 0))
        for k in ("timeouts", "tlp_probes", "retransmits", "rack_recoveries", "ecn_reductions")
    }


async def _short(
    loop: SimEventLoop, tcp: TcpConfig, faults: FaultConfig, n: int, size: int, seed: int
) -> dict[str, Any]:
    """``n`` request/response exchanges on one connection; the time of each."""
    a, b, nics = await _pair(loop, tcp, faults)
    body = random.Random(seed).randbytes(size)
    served: asyncio.Future[None] = loop.create_future()
    try:

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    try:
                        await reader.readexactly(100)
                    except asyncio.IncompleteReadError:
                        break
                    writer.write(body)
                writer.close()
            finally:
                if not served.done():
                    served.set_result(None)

        server = await b.start_server(serve, "10.0.0.2", PORT)
        reader, writer = await a.open_connection("10.0.0.2", PORT)
        times: list[float] = []
        for _ in range(n):
            t0 = loop.time()
            writer.write(b"q" * 100)
            got = await reader.readexactly(size)
            times.append(loop.time() - t0)
            if got != body:
                raise AssertionError(f"response corrupted (seed {seed})")
        srtt = writer.transport.get_extra_info("stack_tcp_info")["srtt"]
        counters = _conn_counters(b)  # the responder is the sender that recovers
        writer.close()
        await asyncio.wait_for(served, 60.0)
        server.close()
        return {"times": times, "srtt": srtt, **counters}
    finally:
        await a.close(linger=0.0)
        await b.close(linger=0.0)
        for nic in nics:
            nic.close()


async def _bulk(
    loop: SimEventLoop, tcp: TcpConfig, faults: FaultConfig, nbytes: int, seed: int
) -> dict[str, Any]:
    """``nbytes`` from A to B; goodput from connect to B's reading the last byte."""
    a, b, nics = await _pair(loop, tcp, faults)
    data = random.Random(seed).randbytes(nbytes)
    done: asyncio.Future[tuple[bytes, float]] = loop.create_future()
    try:

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            h = hashlib.sha256()
            while chunk := await reader.read(1 << 20):
                h.update(chunk)
            writer.close()
            if not done.done():
                done.set_result((h.digest(), loop.time()))

        server = await b.start_server(serve, "10.0.0.2", PORT)
        t0 = loop.time()
        _, writer = await a.open_connection("10.0.0.2", PORT)
        writer.write(data)
        writer.write_eof()
        digest, t_end = await done
        if digest != hashlib.sha256(data).digest():
            raise AssertionError(f"bulk data corrupted (seed {seed})")
        counters = _conn_counters(a)
        writer.close()
        server.close()
        secs = max(t_end - t0, 1e-9)  # a link with no delay and no rate takes no time
        return {"seconds": secs, "goodput_bps": nbytes * 8 / secs, **counters}
    finally:
        await a.close(linger=0.0)
        await b.close(linger=0.0)
        for nic in nics:
            nic.close()


def run_one(label: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Both workloads of one configuration and seed, each on a fresh virtual clock."""
    over, ecn = CONFIGS[label]
    # Linux-like timers (RTO >= 200 ms): virtual time makes them free.
    tcp = TcpConfig(**over)
    out: dict[str, Any] = {"config": label, "seed": seed}
    for name in ("short", "bulk"):
        random.seed(seed)  # ephemeral ports and IP IDs come from `random`
        loop = SimEventLoop()
        loss = args.loss if name == "short" else args.bulk_loss
        faults = _faults(loss, ecn, args.rate, args.delay, seed)
        try:
            if name == "short":
                coro = _short(loop, tcp, faults, args.short_n, args.short_size, seed)
            else:
                coro = _bulk(loop, tcp, faults, args.bulk, seed)
            out[name] = loop.run_until_complete(asyncio.wait_for(coro, RUN_LIMIT))
        finally:
            loop.close()
    return out


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(runs: list[dict[str, Any]], rtt: float) -> dict[str, dict[str, float]]:
    """Per configuration: the short-transfer time distribution over every exchange of
    every seed, and the bulk goodput distribution over seeds."""
    out: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(r["config"] for r in runs):
        rs = [r for r in runs if r["config"] == label]
        times = [t for r in rs for t in r["short"]["times"]]
        per_seed_mean = [statistics.fmean(r["short"]["times"]) for r in rs]
        gp = [r["bulk"]["goodput_bps"] / 1e6 for r in rs]
        out[label] = {
            "seeds": len(rs),
            "short_n": len(times),
            "short_p50_ms": _pct(times, 0.5) * 1e3,
            "short_p90_ms": _pct(times, 0.9) * 1e3,
            "short_p99_ms": _pct(times, 0.99) * 1e3,
            "short_max_ms": max(times) * 1e3,
            "short_mean_ms": statistics.fmean(times) * 1e3,
            "short_seed_mean_p10_ms": _pct(per_seed_mean, 0.1) * 1e3,
            "short_seed_mean_p90_ms": _pct(per_seed_mean, 0.9) * 1e3,
            "short_slow_pct": 100.0 * sum(t > 5 * rtt for t in times) / len(times),
            "short_timeouts": sum(r["short"]["timeouts"] for r in rs),
            "short_tlp_probes": sum(r["short"]["tlp_probes"] for r in rs),
            "bulk_mbps_p50": _pct(gp, 0.5),
            "bulk_mbps_p10": _pct(gp, 0.1),
            "bulk_mbps_p90": _pct(gp, 0.9),
            "bulk_mbps_min": min(gp),
            "bulk_timeouts": sum(r["bulk"]["timeouts"] for r in rs),
            "bulk_retransmits": sum(r["bulk"]["retransmits"] for r in rs),
            "bulk_ecn_reductions": sum(r["bulk"]["ecn_reductions"] for r in rs),
        }
    return out


def format_tables(summary: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    """The two tables of ``anp bench tcp-compare``."""
    first = next(iter(summary.values()))
    seeds = int(first["seeds"])
    rtt_ms = 2 * args.delay * 1e3
    head = (
        f"{seeds} seeds; link {args.rate / 1e6:g} Mbit/s each way (100-frame queue), "
        f"{rtt_ms:g} ms RTT, random loss per frame on data and ACKs (rack+ecn: CE marks "
        "with the same probability instead); virtual time"
    )
    lines = [
        head,
        "",
        f"short transfers, {args.loss:.1%} loss: {args.short_n} x (100 B request -> "
        f"{args.short_size} B response) per seed, {int(first['short_n'])} in all; ms",
        f"{'config':<10} {'p50':>7} {'p90':>7} {'p99':>8} {'max':>8} {'mean':>7} "
        f"{'seed-mean p10..p90':>19} {'>5RTT':>6} {'RTOs':>5} {'TLPs':>5}",
    ]
    for label, s in summary.items():
        spread = f"{s['short_seed_mean_p10_ms']:.1f}..{s['short_seed_mean_p90_ms']:.1f}"
        lines.append(
            f"{label:<10} {s['short_p50_ms']:>7.1f} {s['short_p90_ms']:>7.1f} "
            f"{s['short_p99_ms']:>8.1f} {s['short_max_ms']:>8.1f} {s['short_mean_ms']:>7.1f} "
            f"{spread:>19} {s['short_slow_pct']:>5.1f}% {s['short_timeouts']:>5.0f} "
            f"{s['short_tlp_probes']:>5.0f}"
        )
    lines += [
        "",
        f"bulk, {args.bulk_loss:.1%} loss: {args.bulk} bytes one way per seed; "
        "goodput Mbit/s over seeds",
        f"{'config':<10} {'p50':>7} {'p10..p90':>15} {'min':>7} {'RTOs':>6} {'rexmits':>8} "
        f"{'ECN cuts':>9}",
    ]
    for label, s in summary.items():
        spread = f"{s['bulk_mbps_p10']:.2f}..{s['bulk_mbps_p90']:.2f}"
        lines.append(
            f"{label:<10} {s['bulk_mbps_p50']:>7.2f} {spread:>15} {s['bulk_mbps_min']:>7.2f} "
            f"{s['bulk_timeouts']:>6.0f} {s['bulk_retransmits']:>8.0f} "
            f"{s['bulk_ecn_reductions']:>9.0f}"
        )
    return "\n".join(lines)


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``anp bench tcp-compare`` / ``python -m anp_async.bench.tcp_compare``."""
    p.add_argument("--seeds", default="1-40", help="fault-injector seeds (default 1-40)")
    p.add_argument(
        "--loss", type=_loss, default=0.03, help="short transfers: loss per frame (default 0.03)"
    )
    p.add_argument(
        "--bulk-loss", type=_loss, default=0.01, help="bulk: loss per frame (default 0.01)"
    )
    p.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"from {', '.join(CONFIGS)} (default all)"
    )
    p.add_argument(
        "--short", default="40x15k", help="short transfers per seed: NxSIZE (default 40x15k)"
    )
    p.add_argument(
        "--bulk", "--bytes", dest="bulk", type=_size, default=2 << 20,
        help="bulk bytes (default 2M)",
    )  # fmt: skip
    p.add_argument("--rate", type=_rate, default=20e6, help="link rate, bit/s (default 20M)")
    p.add_argument("--delay", type=_delay, default=0.01, help="one-way delay, s (default 0.01)")
    p.add_argument("--json", default=None, help="also write every run and the summary here")


def run(args: argparse.Namespace) -> int:
    """Run the comparison and print its tables; ValueError for options that cannot work."""
    seeds = _seeds(args.seeds)
    labels = [k.strip() for k in args.configs.split(",") if k.strip()]
    bad = [k for k in labels if k not in CONFIGS]
    if bad or not labels:
        raise ValueError(
            f"--configs {args.configs!r}: name configurations from {', '.join(CONFIGS)}"
        )
    n, _, size = args.short.lower().partition("x")
    try:
        args.short_n, args.short_size = int(n), _size(size)
    except (ValueError, argparse.ArgumentTypeError):
        args.short_n = 0
    if not (1 <= args.short_n <= 10_000 and 1 <= args.short_size <= 64 << 20):
        raise ValueError(f"--short {args.short!r}: NxSIZE, 1..10000 transfers of 1 B..64M")
    if args.json and not os.access(os.path.dirname(os.path.abspath(args.json)), os.W_OK):
        raise ValueError(f"--json {args.json!r}: its folder does not exist or is not writable")
    t0 = time.perf_counter()
    runs = [run_one(label, seed, args) for label in labels for seed in seeds]
    summary = summarize(runs, 2 * args.delay)
    print(format_tables(summary, args))
    print(f"({len(runs)} runs in {time.perf_counter() - t0:.1f} s of wall time)", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": runs}, f, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m anp_async.bench.tcp_compare", description=__doc__.split("\n")[0]
    )
    configure(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
