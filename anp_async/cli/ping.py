"""``anp ping``: ICMP echo from the stack, printed like ping(8)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import math
import time

from .base import CliError, Command, consume_stop, reason
from .options import open_stack_from_args


def _configure_ping(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", help="address to ping from the stack (e.g. the kernel side 10.0.0.1)")
    p.add_argument("-c", "--count", type=int, default=5, help="echo requests (default 5)")
    p.add_argument("-i", "--interval", type=float, default=1.0, help="seconds between requests")
    p.add_argument("-s", "--size", type=int, default=56, help="ICMP payload bytes (default 56)")
    p.add_argument("-W", "--timeout", type=float, default=1.0, help="seconds to wait per reply")
    p.add_argument("--json", action="store_true", help="one JSON object per reply and a summary")


def ping_summary(host: str, sent: int, rtts: list[float], elapsed: float) -> list[str]:
    """The closing lines of ping(8) for ``sent`` requests and the RTTs (seconds) received."""
    recv = len(rtts)
    loss = 100.0 * (sent - recv) / sent if sent else 0.0
    lines = [
        f"--- {host} ping statistics ---",
        f"{sent} packets transmitted, {recv} received, {loss:g}% packet loss, "
        f"time {elapsed * 1000:.0f}ms",
    ]
    if rtts:
        ms = [r * 1000 for r in rtts]
        avg = sum(ms) / len(ms)
        mdev = math.sqrt(max(0.0, sum(x * x for x in ms) / len(ms) - avg * avg))
        lines.append(f"rtt min/avg/max/mdev = {min(ms):.3f}/{avg:.3f}/{max(ms):.3f}/{mdev:.3f} ms")
    return lines


async def cmd_ping(args: argparse.Namespace) -> int:
    """``anp ping``: exit 0 when every request was answered, 1 otherwise (like ping -c)."""
    finite = math.isfinite(args.interval) and math.isfinite(args.timeout)
    if (
        not finite
        or args.count < 1
        or args.interval < 0
        or args.timeout <= 0
        or not 0 <= args.size <= 65000
    ):
        raise CliError("-c must be >= 1, -i >= 0, -W > 0 and -s within 0..65000")

    def out(text: str, obj: dict[str, object]) -> None:
        print(json.dumps(obj) if args.json else text, flush=True)

    async with open_stack_from_args(args) as stack:
        if not args.json:
            print(f"PING {args.host} ({args.host}) {args.size}({args.size + 28}) bytes of data.")
        rtts: list[float] = []
        sent = 0
        t_start = time.perf_counter()
        try:
            for seq in range(1, args.count + 1):
                t0 = time.perf_counter()
                sent += 1
                try:
                    rtt = await stack.ping(args.host, timeout=args.timeout, size=args.size)
                except TimeoutError:
                    out(f"no answer yet for icmp_seq={seq}", {"seq": seq, "error": "timeout"})
                except OSError as e:
                    if e.errno != errno.EHOSTUNREACH:
                        raise CliError(f"ping {args.host}: {reason(e)}") from None
                    out(
                        f"From {stack.ip} icmp_seq={seq} Destination Host Unreachable",
                        {"seq": seq, "error": "host unreachable"},
                    )
                else:
                    rtts.append(rtt)
                    out(
                        f"{args.size + 8} bytes from {args.host}: icmp_seq={seq} "
                        f"time={rtt * 1000:.3f} ms",
                        {"seq": seq, "rtt_ms": round(rtt * 1000, 4)},
                    )
                if seq < args.count:
                    await asyncio.sleep(max(0.0, args.interval - (time.perf_counter() - t0)))
        except asyncio.CancelledError:
            if not consume_stop():
                raise
        elapsed = time.perf_counter() - t_start
        if args.json:
            ms = [r * 1000 for r in rtts]
            summary: dict[str, object] = {
                "host": args.host, "transmitted": sent, "received": len(rtts),
                "seconds": round(elapsed, 4), "mode": stack.mode_name,
            }  # fmt: skip
            if ms:
                summary |= {"rtt_ms_min": min(ms), "rtt_ms_avg": sum(ms) / len(ms),
                            "rtt_ms_max": max(ms)}  # fmt: skip
            print(json.dumps(summary))
        else:
            print()
            for line in ping_summary(args.host, sent, rtts, elapsed):
                print(line)
    return 0 if sent and len(rtts) == sent else 1


COMMAND = Command(
    "ping",
    "ping a host from the stack, like ping(8)",
    _configure_ping,
    cmd_ping,
    stack_options=True,
)
