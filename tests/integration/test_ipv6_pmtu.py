"""Path MTU discovery over IPv6 against a Linux router (RFC 8201).

    stack fd00::2 --TAP (offloads, 1500)-- [ns R: fd00::1, forwarding, fd01::1 MTU 1280]
        --veth-- [ns H: fd01::2, MTU 1500]

H announces MSS 1440 (its own link is 1500), so the stack's segments fit H but not R's
1280-byte link: R drops them and answers Packet Too Big, as an IPv6 router must (it never
fragments). The stack has to cut its segments to the path MTU itself (its TCP segments
carry a partial checksum and leave as TSO super-segments, which fragmentation at the
source cannot split); before it did, the transfer stalled for good.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest

from anp_async import Stack, StackConfig
from anp_async.nic.netns import Netns
from anp_async.nic.tap import TapNic
from tests.netutil import KERNEL_CIDR, STACK_CIDR, STACK_MAC
from tests.stackutil import fast_tcp, python_in_ns

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

TAP = "anppmtu0"
NBYTES = 3_000_000

SERVER = """
import hashlib, socket
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("fd01::2", 9001)); s.listen(1); s.settimeout(40); print("ready", flush=True)
c, _ = s.accept(); c.settimeout(40); h = hashlib.sha256(); n = 0
while (d := c.recv(1 << 20)):
    n += len(d); h.update(d)
print(n, h.hexdigest(), flush=True)
"""


@pytest.fixture
def routed6(netns: Netns) -> Iterator[tuple[Netns, TapNic]]:
    far = Netns.create()
    tap: TapNic | None = None
    try:
        tap = TapNic.open(TAP, peer=KERNEL_CIDR, peer6="fd00::1/64", netns=netns, vnet_hdr=True)
        for cmd in (
            ["ip", "link", "add", "pmtur", "type", "veth", "peer", "pmtuh"],
            ["ip", "link", "set", "pmtuh", "netns", far.name],
            ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
            ["sysctl", "-qw", "net.ipv6.conf.pmtur.accept_dad=0"],
            ["ip", "link", "set", "pmtur", "mtu", "1280", "up"],
            ["ip", "-6", "addr", "add", "fd01::1/64", "dev", "pmtur", "nodad"],
        ):
            netns.run(cmd, check=True)
        for cmd in (
            ["sysctl", "-qw", "net.ipv6.conf.pmtuh.accept_dad=0"],
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "set", "pmtuh", "mtu", "1500", "up"],
            ["ip", "-6", "addr", "add", "fd01::2/64", "dev", "pmtuh", "nodad"],
            ["ip", "-6", "route", "add", "fd00::/64", "via", "fd01::1"],
        ):
            far.run(cmd, check=True)
        yield far, tap
    finally:
        if tap is not None:
            tap.close()
        far.delete()


async def test_packet_too_big_from_a_router_lowers_the_mss(
    routed6: tuple[Netns, TapNic],
) -> None:
    far, tap = routed6
    cfg = StackConfig(
        nic=tap, ip=STACK_CIDR, mac=STACK_MAC.hex(":"), ip6="fd00::2/64", gateway6="fd00::1",
        dad_transmits=0, tcp=fast_tcp(),
    )  # fmt: skip
    data = bytes(range(256)) * (NBYTES // 256)
    async with Stack(cfg) as stack:
        proc = await python_in_ns(far, SERVER)
        assert proc.stdout is not None
        try:
            _r, w = await stack.open_connection("fd01::2", 9001)
            info = w.get_extra_info("stack_tcp_info")
            assert info["mss"] == 1440 - 12  # H's MSS less the timestamp option

            async def send() -> None:
                w.write(data)
                await w.drain()
                w.close()

            # Deadlines, not a speed: without path MTU discovery it never completes.
            await asyncio.wait_for(send(), 30)
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        n, digest = line.decode().split()
        assert int(n) == len(data) and digest == hashlib.sha256(data).hexdigest()
        stats = stack.stats()
    assert stats["ipv6"]["icmp"]["packet_too_big"] >= 1
    assert stats["tcp"]["icmp_packet_too_big"] >= 1
    assert stats["tcp"]["conn_pmtu_reductions"] == 1
    assert stats["tcp"]["tso_segments_sent"] > 10  # super-segments, cut to the new size
