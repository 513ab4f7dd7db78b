"""Every drop reaches ``stack.stats()``: here the IPv4 reassembler's, through the real
receive path (frames crafted with scapy, sent over the in-memory wire)."""

from __future__ import annotations

import asyncio

from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

from anp_async.nic.wire import Wire
from anp_async.stack import _REASSEMBLY_DROPS, Stack, StackConfig


async def test_reassembly_drops_reach_stats() -> None:
    nic, peer = Wire.pair()
    try:
        async with Stack(StackConfig(nic=nic, ip="10.0.0.2/24")) as stack:
            eth = Ether(src="02:00:00:00:00:01", dst=stack.mac)
            ip = {"src": "10.0.0.1", "dst": "10.0.0.2", "proto": 17, "id": 7}
            first = eth / IP(flags="MF", frag=0, **ip) / (b"a" * 8)
            # Offset 65512 + 8 bytes + 20 of header = 65540 > 65535 (ping of death).
            last = eth / IP(frag=65512 // 8, **ip) / (b"b" * 8)
            for f in (first, last):
                peer.send([bytes(f)])
            for _ in range(100):
                await asyncio.sleep(0.01)
                if stack.stats()["ip"]["reassembly_too_big"]:
                    break
            ip_stats = stack.stats()["ip"]
            assert ip_stats["reassembly_too_big"] == 1
            assert all(f"reassembly_{k}" in ip_stats for k in _REASSEMBLY_DROPS)
            assert stack.reassembler.counters["too_big"] == 1
    finally:
        peer.close()
