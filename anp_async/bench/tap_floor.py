"""The floor under the stack's cost per ping: an asyncio program that answers ICMP echo on
a TAP with the least work there is, and no stack.

    python -m anp_async.bench.tap_floor --count 5000            # virtio-net header on
    python -m anp_async.bench.tap_floor --count 5000 --no-offload
    python -m anp_async.bench.tap_floor --count 5000 --blocking # no event loop at all

A reader callback takes each frame, answers an ARP request for 10.0.0.2 or turns an echo
request into its reply in place (MACs and addresses swapped, type 0, the checksum fixed by
RFC 1624's incremental rule) and writes it back: one wake-up, one ``read`` and one
``writev`` per ping, as the stack in interrupt mode has. The benchmark's kernel ICMP client
pings it from a namespace of its own; one JSON line gives the mean round trip and this
process's CPU per ping (user and system). Whatever the stack costs above this figure is
the stack's; the figure itself is the machine's price of a TAP round trip through asyncio.
``--blocking`` answers from a plain blocking ``read``/``writev`` loop in a thread of its
own instead (its CPU clock measured, no user/system split): the least any Python program
can spend per ping on a TAP, event loop or not.
Bounded: ``--count`` pings (at most 1,000,000), a 120 s limit; the namespace is removed on
exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import threading
import time
from typing import Any

from anp_async.nic.netns import Netns, unique_name
from anp_async.nic.tap import TapNic
from anp_async.nic.vnet import VNET_HDR_LEN

from .profile_rr import WARMUP_PINGS as WARMUP
from .profile_rr import icmp_client_argv, kernel_client, mean_rtt_us

OUR_MAC = bytes.fromhex("020000000002")
OUR_IP = bytes([10, 0, 0, 2])


def echo_reply_in_place(eth: bytearray) -> bool:
    """Turn the Ethernet frame of an IPv4 ICMP echo request (no IP options) into its
    reply; False (untouched) for anything else."""
    if eth[12:14] != b"\x08\x00" or eth[14] != 0x45 or eth[23] != 1 or eth[34] != 8:
        return False
    eth[0:6], eth[6:12] = eth[6:12], OUR_MAC
    eth[26:30], eth[30:34] = eth[30:34], eth[26:30]
    eth[34] = 0
    # RFC 1624 (3), eqn. 3: HC' = ~(~HC + ~m + m') with m = 0x0800 (type 8, code 0) and
    # m' = 0. It gives what a fresh computation gives, except for a message that is all
    # zeros now (sum +0, checksum 0xFFFF), where the incremental sum is -0.
    s = (~int.from_bytes(eth[36:38], "big") & 0xFFFF) + 0xF7FF
    s = (s & 0xFFFF) + (s >> 16)
    hc = ~s & 0xFFFF
    if not hc and not any(eth[38:]):
        hc = 0xFFFF
    eth[36:38] = hc.to_bytes(2, "big")
    return True


def arp_reply(eth: bytes | bytearray) -> bytes | None:
    """The reply to an ARP request for :data:`OUR_IP`, else None."""
    if eth[12:14] != b"\x08\x06" or eth[20:22] != b"\x00\x01" or eth[38:42] != OUR_IP:
        return None
    return bytes(
        eth[6:12] + OUR_MAC + b"\x08\x06" + eth[14:20] + b"\x00\x02"
        + OUR_MAC + OUR_IP + eth[22:28] + eth[28:32]
    )  # fmt: skip


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _answer(fd: int, off: int) -> bool:
    """Read one frame from the TAP ``fd`` and answer it if it is an echo request or an
    ARP request for us; True for an echo answered."""
    frame = bytearray(os.read(fd, 65536))
    eth = frame[off:]
    if echo_reply_in_place(eth):
        os.writev(fd, [bytes(off), eth] if off else [eth])  # (a plain vnet header)
        return True
    if (reply := arp_reply(eth)) is not None:
        os.writev(fd, [bytes(off), reply] if off else [reply])
    return False


def _blocking_responder(fd: int, off: int, count: int, out: dict[str, float]) -> None:
    """Answer the client's warm-up pings, then ``count`` more, in blocking calls; the
    thread's CPU time over those ``count`` goes to ``out["cpu_s"]``."""
    os.set_blocking(fd, True)
    answered = 0
    while answered < WARMUP:
        answered += _answer(fd, off)
    t0 = time.thread_time()
    while answered < WARMUP + count:
        answered += _answer(fd, off)
    out["cpu_s"] = time.thread_time() - t0


async def run(count: int, offload: bool, blocking: bool = False) -> dict[str, Any]:
    ns = Netns.create(unique_name("anp-floor"))
    try:
        tap = TapNic.open("anpfloor0", peer="10.0.0.1/24", netns=ns.name, vnet_hdr=offload)
        fd = tap.fileno()
        off = VNET_HDR_LEN if offload else 0
        if blocking:
            try:
                return await _run_blocking(ns, fd, off, count, offload)
            finally:
                tap.close()

        def on_readable() -> None:
            with contextlib.suppress(BlockingIOError):
                _answer(fd, off)

        loop = asyncio.get_running_loop()
        loop.add_reader(fd, on_readable)
        try:
            async with kernel_client(ns, icmp_client_argv(count)) as out:
                u0, s0 = _cpu()
                line = await asyncio.wait_for(out.readline(), 120)
                u1, s1 = _cpu()
        finally:
            loop.remove_reader(fd)
            tap.close()
        return {
            "what": "tap-floor", "offload": offload, "count": count,
            "rr_us": mean_rtt_us(line),
            "cpu_us_per_req": (u1 - u0 + s1 - s0) / count * 1e6,
            "user_us_per_req": (u1 - u0) / count * 1e6, "sys_us_per_req": (s1 - s0) / count * 1e6,
        }  # fmt: skip
    finally:
        ns.delete()


async def _run_blocking(
    ns: Netns, fd: int, off: int, count: int, offload: bool
) -> dict[str, Any]:
    got: dict[str, float] = {}
    thread = threading.Thread(
        target=_blocking_responder, args=(fd, off, count, got), daemon=True
    )  # (daemon: a client that died early leaves it blocked in read; the process ends)
    thread.start()
    async with kernel_client(ns, icmp_client_argv(count)) as out:
        line = await asyncio.wait_for(out.readline(), 120)
    await asyncio.to_thread(thread.join, 10)
    if "cpu_s" not in got:
        raise RuntimeError("the blocking responder did not answer every ping")
    return {
        "what": "tap-floor-blocking", "offload": offload, "count": count,
        "rr_us": mean_rtt_us(line), "cpu_us_per_req": got["cpu_s"] / count * 1e6,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anp_async.bench.tap_floor")
    p.add_argument("--count", type=int, default=5000, help="pings (default 5000)")
    p.add_argument("--no-offload", dest="offload", action="store_false",
                   help="no virtio-net header on the TAP")  # fmt: skip
    p.add_argument("--blocking", action="store_true",
                   help="answer from a blocking read/write loop, no event loop")  # fmt: skip
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(max(1, min(a.count, 1_000_000)), a.offload, a.blocking))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
