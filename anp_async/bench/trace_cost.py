"""``anp bench trace-cost``: what ``anp trace`` costs, on and off, measured in one run.

Two pairs of stacks on the in-memory wire run the same UDP request/response loop (64 B,
one request in flight) in one process, in interleaved rounds (the two untraced phases swap
places every round):

- ``never``: pair 1, whose stacks were never traced;
- ``control``: pair 3, never traced either: ``control/never`` is how much two identical
  pairs differ in this run (the noise floor);
- ``off``: pair 2's server after a tracer was attached and detached (what a stack is
  after ``anp trace`` has come and gone);
- ``on``: pair 2's server while traced (records built and discarded by the sink).

Reported: CPU (thread time) per request, median over the rounds with min..max, and the
ratios ``off/never`` (tracing off must cost nothing: within the noise floor) and
``on/never`` (what tracing costs while on). Needs no root: the wire is a socketpair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

HELP = "what anp trace costs on and off (same run, in-memory wire, no root)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=2000, help="requests per round and phase")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--mode", default="interrupt", help="receive mode of the stacks")
    p.add_argument("--out", type=Path, help="also write results.json into this folder")


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


async def _pair(mode: str) -> tuple[Any, Any, Any, _Client]:
    from ..nic.wire import Wire
    from ..stack import Stack, StackConfig

    na, nb = Wire.pair()
    a = Stack(StackConfig(nic=na, ip="10.0.0.1/24", mode=mode))
    b = Stack(StackConfig(nic=nb, ip="10.0.0.2/24", mode=mode))
    a.start()
    b.start()
    await b.create_datagram_endpoint(_Echo, local_addr=("10.0.0.2", 7))
    tr, client = await a.create_datagram_endpoint(_Client, remote_addr=("10.0.0.2", 7))
    return a, b, tr, client


async def _rr(tr: Any, client: _Client, n: int) -> float:
    """CPU seconds per request of ``n`` request/responses (both stacks, one loop)."""
    loop = asyncio.get_running_loop()
    payload = bytes(64)
    t0 = time.thread_time()
    for _ in range(n):
        client.waiter = loop.create_future()
        tr.sendto(payload)
        await asyncio.wait_for(client.waiter, 1.0)
    return (time.thread_time() - t0) / n


async def measure(requests: int, rounds: int, mode: str = "interrupt") -> dict[str, Any]:
    """Run the three phases ``rounds`` times, interleaved; return the figures."""
    from ..obs.trace import Tracer

    p1 = await _pair(mode)
    p2 = await _pair(mode)
    p3 = await _pair(mode)
    try:
        for p in (p1, p2, p3):
            await _rr(p[2], p[3], 200)  # ARP and warm-up
        Tracer(p2[1], lambda r: None).attach().detach()  # pair 2 has been traced
        per: dict[str, list[float]] = {"never": [], "control": [], "off": [], "on": []}
        records = 0

        def sink(r: dict[str, Any]) -> None:
            nonlocal records
            records += 1

        for i in range(rounds):
            # Rotate the untraced pairs' order, so position in the round cancels out.
            order = [("never", p1), ("control", p3), ("off", p2)]
            for name, p in order[i % 3 :] + order[: i % 3]:
                per[name].append(await _rr(p[2], p[3], requests))
            t = Tracer(p2[1], sink).attach()
            try:
                per["on"].append(await _rr(p2[2], p2[3], requests))
            finally:
                t.detach()
        from ..obs.trace import PATCHED

        leftover = [f"{c.__name__}.{n}" for c, n in PATCHED]
    finally:
        for p in (p1, p2, p3):
            p[2].close()
            await p[0].close(linger=0)
            await p[1].close(linger=0)
    med = {k: statistics.median(v) for k, v in per.items()}
    return {
        "requests": requests, "rounds": rounds, "mode": mode,
        "us_per_request": {k: v * 1e6 for k, v in med.items()},
        "us_min": {k: min(v) * 1e6 for k, v in per.items()},
        "us_max": {k: max(v) * 1e6 for k, v in per.items()},
        "off_over_never": med["off"] / med["never"],
        "control_over_never": med["control"] / med["never"],
        "on_over_never": med["on"] / med["never"],
        "off_over_never_rounds": [o / n for o, n in zip(per["off"], per["never"], strict=True)],
        "records_per_request": records / (requests * rounds),
        "per_round": {k: [x * 1e6 for x in v] for k, v in per.items()},
        "hooks_left_after_detach": leftover,
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """``anp bench trace-cost``: print the table (and write results.json with ``--out``)."""
    res = asyncio.run(measure(args.requests, args.rounds, args.mode))
    us, lo, hi = res["us_per_request"], res["us_min"], res["us_max"]
    print(
        f"anp bench trace-cost: UDP 64 B request/response on the in-memory wire, mode "
        f"{res['mode']}, {res['rounds']} rounds x {res['requests']} requests"
    )
    print(f"{'phase':<8} {'CPU us/request (median)':>24} {'min':>8} {'max':>8} {'/never':>8}")
    for k in ("never", "control", "off", "on"):
        ratio = us[k] / us["never"]
        print(f"{k:<8} {us[k]:>24.2f} {lo[k]:>8.2f} {hi[k]:>8.2f} {ratio:>8.3f}")
    pr = res["per_round"]
    off = [o / n for o, n in zip(pr["off"], pr["never"], strict=True)]
    ctl = [c / n for c, n in zip(pr["control"], pr["never"], strict=True)]
    print(
        f"per round: off/never {min(off):.3f} .. {max(off):.3f}, "
        f"control/never (noise floor) {min(ctl):.3f} .. {max(ctl):.3f}"
    )
    print(
        f"trace records per request while on: {res['records_per_request']:.1f}; "
        f"tracer methods left on the stack after detach: {len(res['hooks_left_after_detach'])}"
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(res, indent=1))
        print(f"results: {args.out / 'results.json'}")
    return 0
