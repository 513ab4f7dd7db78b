"""SYN flood against a stack listener on the in-memory wire (RFC 4987).

Stack A injects 5000 crafted SYNs from random spoofed sources (198.18.0.0/15, which B has
no route back to, like a flood from the Internet whose answers go nowhere) straight onto the
wire, in bounded batches, while a legitimate A -> B connection opens and exchanges data.
B's listener has a SYN queue of 16: once it is full, B answers with SYN cookies and keeps no
state, so memory stays bounded and the legitimate connection completes through a cookie.
"""

from __future__ import annotations

import asyncio
import random
import time
import tracemalloc

from anp_async.proto.ethernet import ETH_P_IP, build_ethernet_header
from anp_async.proto.ipv4 import build_ipv4_header
from anp_async.proto.tcp import SYN, TcpOptions, TcpSegment, build_tcp
from tests.stackutil import fast_tcp, wire_stacks

FLOOD = 5000
BATCH = 250
BACKLOG = 16
PORT = 8080


def spoofed_syns(dst_mac: bytes, dst_ip: bytes, n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    frames = []
    for i in range(n):
        src = bytes([198, 18 + (i & 1), rng.randrange(256), rng.randrange(1, 255)])
        opts = TcpOptions(mss=1460, sack_permitted=True, timestamp=(rng.getrandbits(32), 0))
        seg = TcpSegment(rng.randrange(1024, 65536), PORT, rng.getrandbits(32), 0, SYN, 64240,
                         b"", opts)  # fmt: skip
        tcp = build_tcp(seg, src, dst_ip)
        ip = build_ipv4_header(src, dst_ip, 6, len(tcp), rng.getrandbits(16))
        mac = bytes([2, 0, 0, rng.randrange(256), rng.randrange(256), rng.randrange(256)])
        frames.append(build_ethernet_header(dst_mac, mac, ETH_P_IP) + ip + tcp)
    return frames


async def test_syn_flood_cookies_bounded_memory_and_legit_connection() -> None:
    async with wire_stacks("interrupt", tcp=fast_tcp()) as (a, b):

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await b.start_server(echo, "10.0.0.2", PORT, backlog=BACKLOG)
        frames = spoofed_syns(b.mac_b, b.ip_b, FLOOD, seed=7)
        tracemalloc.start()
        try:
            mem_before = tracemalloc.get_traced_memory()[0]
            conns_before = len(b.tcp.conns)

            async def flood() -> None:
                for i in range(0, FLOOD, BATCH):
                    for f in frames[i : i + BATCH]:
                        a.nic.send([f])
                    await asyncio.sleep(0.005)  # let B drain the wire (its ring is bounded)

            flooding = asyncio.create_task(flood())
            # Wait until the SYN queue is full of spoofed half-open connections.
            for _ in range(2000):
                if b.tcp.counters["syncookies_sent"] > 0:
                    break
                await asyncio.sleep(0.001)
            assert b.tcp.counters["syncookies_sent"] > 0
            t0 = time.perf_counter()
            reader, writer = await asyncio.wait_for(a.open_connection("10.0.0.2", PORT), 10)
            connect_time = time.perf_counter() - t0
            payload = random.Random(1).randbytes(64 * 1024)
            writer.write(payload)
            echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 20)
            assert echoed == payload
            await flooding
            await asyncio.sleep(0.05)
            peak_conns = len(b.tcp.conns)
            mem_after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        stats = b.tcp.counters
        received = stats["passive_opens"] + stats["syncookies_sent"]
        print(
            f"SYN flood: {FLOOD} spoofed SYNs, {received} reached the listener; "
            f"cookies sent {stats['syncookies_sent']}, cookie ACKs ok {stats['syncookies_ok']}; "
            f"B connections {conns_before} -> {peak_conns}; "
            f"traced memory {mem_before / 1e6:.2f} MB -> {mem_after / 1e6:.2f} MB; "
            f"legitimate connect {connect_time * 1000:.1f} ms during the flood"
        )
        assert received > FLOOD // 2  # the flood really reached B's listener
        assert stats["syncookies_ok"] >= 1  # the legitimate handshake went through a cookie
        # Bounded: the SYN queue (16) plus the legitimate connection, whatever the flood size.
        assert peak_conns <= BACKLOG + 2
        assert mem_after - mem_before < 4_000_000
        writer.close()
        server.close()
