"""SACK vs no SACK and NewReno vs CUBIC, stack to stack through a lossy in-memory wire.

    python -m anp_async.bench.tcp_compare [--bytes 4M] [--loss 0.05] [--seeds 1,2,3,4,5] [--json FILE]

Each run joins two stacks with ``nic/wire.py`` behind the seeded fault injector (random
loss on each side's transmit), sends ``--bytes`` from 10.0.0.1 to 10.0.0.2, checks the data
by sha256 and records the transfer time and the sender's retransmitted bytes
(``bytes_retrans`` from the connection info, like ``ss -ti``). The table shows the median
over the seeds for every configuration. Nothing touches a real interface.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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

#: (label, TcpConfig overrides) of the configurations compared.
CONFIGS: dict[str, dict[str, Any]] = {
    "newreno+sack": {"sack": True, "congestion": "newreno"},
    "newreno-nosack": {"sack": False, "congestion": "newreno"},
    "cubic+sack": {"sack": True, "congestion": "cubic"},
    "cubic-nosack": {"sack": False, "congestion": "cubic"},
}


def bench_tcp(**overrides: Any) -> TcpConfig:
    """Short timers (like the tests' fast_tcp) so a lossy run ends in seconds."""
    base: dict[str, Any] = dict(rto_min=0.05, rto_initial=0.2, msl=0.5, syn_retries=4)
    base.update(overrides)
    return TcpConfig(**base)


async def run_transfer(
    nbytes: int, loss: float, seed: int, tcp: TcpConfig, port: int = 9100
) -> dict[str, Any]:
    """One transfer A -> B through ``loss``; returns time, retransmitted bytes and counters."""
    nic_a, nic_b = Wire.pair()
    faults = FaultConfig(loss=loss, seed=seed)
    fa = FaultyNic(nic_a, dataclasses.replace(faults, direction="tx"))
    fb = FaultyNic(nic_b, dataclasses.replace(faults, direction="tx", seed=seed + 1))
    data = random.Random(seed).randbytes(nbytes)
    digest = hashlib.sha256(data).digest()
    cfg_a = StackConfig(nic=fa, ip="10.0.0.1/24", tcp=tcp)
    cfg_b = StackConfig(nic=fb, ip="10.0.0.2/24", tcp=tcp)
    async with Stack(cfg_a) as a, Stack(cfg_b) as b:

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            h = hashlib.sha256()
            while chunk := await reader.read(1 << 20):
                h.update(chunk)
            writer.write(h.digest())
            await writer.drain()
            writer.close()

        server = await b.start_server(serve, "10.0.0.2", port)
        t0 = time.perf_counter()
        reader, writer = await a.open_connection("10.0.0.2", port)
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        got = await reader.read(64)
        elapsed = time.perf_counter() - t0
        info = writer.transport.get_extra_info("stack_tcp_info")
        writer.close()
        server.close()
    if got != digest:
        raise AssertionError(f"data corrupted or incomplete (seed {seed})")
    return {
        "seconds": elapsed,
        "bytes_retrans": info["bytes_retrans"],
        "retransmits": info["retransmits"],
        "sack": info["sack"],
        "congestion": info.get("congestion"),
        "dropped": fa.fault_stats["dropped"] + fb.fault_stats["dropped"],
        # Frames the wire dropped on the sender's side: (almost all) lost data segments, the
        # least any sender has to retransmit.
        "dropped_tx": fa.fault_stats["dropped"],
    }


async def compare(
    nbytes: int, loss: float, seeds: list[int], configs: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Run every configuration for every seed; medians per configuration."""
    results: dict[str, dict[str, Any]] = {}
    for label, over in (configs or CONFIGS).items():
        runs = [await run_transfer(nbytes, loss, s, bench_tcp(**over)) for s in seeds]
        results[label] = {
            "runs": runs,
            "median_seconds": statistics.median(r["seconds"] for r in runs),
            "median_bytes_retrans": statistics.median(r["bytes_retrans"] for r in runs),
            "median_retransmits": statistics.median(r["retransmits"] for r in runs),
            "median_dropped_tx": statistics.median(r["dropped_tx"] for r in runs),
        }
    return results


def format_table(results: dict[str, dict[str, Any]], nbytes: int, loss: float) -> str:
    """The median table; "sender drops" is the least any sender must retransmit."""
    seeds = len(next(iter(results.values()))["runs"])
    lines = [
        f"{nbytes} bytes through {loss:.0%} loss each way, median of {seeds} seeds",
        f"{'config':<16} {'time s':>8} {'retrans bytes':>14} {'retrans segs':>13} "
        f"{'sender drops':>13}",
    ]
    for label, r in results.items():
        lines.append(
            f"{label:<16} {r['median_seconds']:>8.3f} {r['median_bytes_retrans']:>14.0f} "
            f"{r['median_retransmits']:>13.0f} {r['median_dropped_tx']:>13.0f}"
        )
    return "\n".join(lines)


def _size(text: str) -> int:
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("ib").rstrip("b")
    try:
        n = int(float(t[:-1]) * mult[t[-1]]) if t and t[-1] in mult else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 4M, 65536)") from None
    if not 1 <= n <= 1 << 32:
        raise argparse.ArgumentTypeError(f"{text!r}: bytes must be from 1 to 4G")
    return n


def _loss(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        p = -1.0
    if not 0.0 <= p < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a loss probability in [0, 1)")
    return p


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``anp bench tcp-compare`` / ``python -m anp_async.bench.tcp_compare``."""
    p.add_argument("--bytes", type=_size, default=4 << 20, help="bytes each way (default 4M)")
    p.add_argument("--loss", type=_loss, default=0.05, help="loss per frame (default 0.05)")
    p.add_argument("--seeds", default="1,2,3,4,5", help="fault-injector seeds (median over them)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="configurations to compare")
    p.add_argument("--json", default=None, help="also write the raw results here")


def run(args: argparse.Namespace) -> int:
    """Run the comparison and print its table."""
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(
            f"--seeds {args.seeds!r} is not a comma-separated list of integers"
        ) from None
    names = [k.strip() for k in args.configs.split(",") if k.strip()]
    unknown = [k for k in names if k not in CONFIGS]
    if unknown or not names or not seeds:
        raise ValueError(
            f"--configs {args.configs!r} / --seeds {args.seeds!r}: name configurations from "
            f"{', '.join(CONFIGS)} and at least one seed"
        )
    if args.json and not os.access(os.path.dirname(os.path.abspath(args.json)), os.W_OK):
        raise ValueError(f"--json {args.json!r}: its folder does not exist or is not writable")
    configs = {k: CONFIGS[k] for k in names}
    results = asyncio.run(compare(args.bytes, args.loss, seeds, configs))
    print(format_table(results, args.bytes, args.loss))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m anp_async.bench.tcp_compare", description=__doc__.split("\n")[0]
    )
    configure(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
