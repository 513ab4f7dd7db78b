"""The floor under the stack's cost per ping: an asyncio program that answers ICMP echo on
a TAP with the least work there is, and no stack.

    python -m anp_async.bench.tap_floor --count 5000            # virtio-net header on
    python -m anp_async.bench.tap_floor --count 5000 --no-offload

A reader callback takes each frame, answers an ARP request for 10.0.0.2 or turns an echo
request into its reply in place (MACs and addresses swapped, type 0, the checksum fixed by
RFC 1624's incremental rule) and writes it back: one wake-up, one ``read`` and one
``writev`` per ping, as the stack in interrupt mode has. The benchmark's kernel ICMP client
pings it from a namespace of its own; one JSON line gives the mean round trip and this
process's CPU per ping (user and system). Whatever the stack costs above this figure is
the stack's; the figure itself is the machine's price of a TAP round trip through asyncio.
Bounded: ``--count`` pings (at most 1,000,000), a 120 s limit; the namespace is removed on
exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
from typing import Any

from anp_async.nic.netns import Netns, unique_name
from anp_async.nic.tap import TapNic
from anp_async.nic.vnet import VNET_HDR_LEN

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


async def run(count: int, offload: bool) -> dict[str, Any]:
    ns = Netns.create(unique_name("anp-floor"))
    try:
        tap = TapNic.open("anpfloor0", peer="10.0.0.1/24", netns=ns.name, vnet_hdr=offload)
        fd = tap.fileno()
        off = VNET_HDR_LEN if offload else 0
        vnet = bytes(off)  # no offload asked for: the reply's checksum is complete

        def on_readable() -> None:
            try:
                frame = bytearray(os.read(fd, 65536))
            except BlockingIOError:
                return
            eth = frame[off:]
            if echo_reply_in_place(eth):
                os.writev(fd, [vnet, eth] if off else [eth])
            elif (reply := arp_reply(eth)) is not None:
                os.writev(fd, [vnet, reply] if off else [reply])

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anp_async.bench.tap_floor")
    p.add_argument("--count", type=int, default=5000, help="pings (default 5000)")
    p.add_argument("--no-offload", dest="offload", action="store_false",
                   help="no virtio-net header on the TAP")  # fmt: skip
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(max(1, min(a.count, 1_000_000)), a.offload))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
