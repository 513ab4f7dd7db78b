"""TSO against a kernel path that announces a small MSS (``ip route ... advmss``), as a new
user meets it. The stack's super-segments leave the TAP with a gso_size; a kernel that
forwards them to a device without offloads cuts them there, so what a wire carries is
visible one hop further: a veth with TSO/GSO off into a second namespace, where tcpdump
reads the real segment sizes. They must fit the MSS the far end announced, never the
stack's own 1460.

    stack 10.0.0.2 --TAP-- [ns R: 10.0.0.1, forwarding, 10.0.1.1] --veth-- [ns H: 10.0.1.2]
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import re
import socket
import struct
from collections.abc import Iterator

import pytest

from anp_async import Stack, StackConfig
from anp_async.nic.netns import Netns, veth_pair
from anp_async.nic.tap import TapNic
from tests.netutil import KERNEL_CIDR, KERNEL_IP, STACK_CIDR, STACK_IP, STACK_MAC
from tests.stackutil import fast_tcp, python_in_ns, run_in_ns

TAP = "anpmss0"
FAR_IP = "10.0.1.2"
ADVMSS = 500
#: Data per segment: the announced MSS less the timestamp option (RFC 6691).
EXPECTED = ADVMSS - 12
NBYTES = 400_000

SERVER = f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{FAR_IP}", 9001)); s.listen(1); s.settimeout(30); print("ready", flush=True)
c, _ = s.accept(); c.settimeout(30); n = 0
while (d := c.recv(1 << 20)): n += len(d)
print(n, flush=True)
"""
CLIENT = f"""
import socket
c = socket.create_connection(("{STACK_IP}", 9000), timeout=30); n = 0
while (d := c.recv(1 << 20)): n += len(d)
print(n, flush=True)
"""


def segmentation_offloads_off(ns: Netns, ifname: str) -> None:
    """``ethtool -K IF tso off gso off`` inside ``ns`` (SIOCETHTOOL; no ethtool binary)."""
    with ns.enter(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for cmd in (0x1F, 0x24):  # ETHTOOL_STSO, ETHTOOL_SGSO
            val = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
            ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(val))
            fcntl.ioctl(s.fileno(), 0x8946, ifr + bytes(40 - len(ifr)))  # SIOCETHTOOL


@pytest.fixture
def routed(netns: Netns) -> Iterator[tuple[Netns, TapNic]]:
    far = Netns.create()
    tap: TapNic | None = None
    try:
        tap = TapNic.open(TAP, peer=KERNEL_CIDR, netns=netns, vnet_hdr=True)
        veth_pair(netns, far, "10.0.1.1/24", f"{FAR_IP}/24", "mssr", "mssh")
        netns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        segmentation_offloads_off(netns, "mssr")  # the forwarding kernel cuts: a wire
        # The far host announces MSS 500 toward the stack (a path with a small MTU would).
        far.run(
            ["ip", "route", "add", "10.0.0.0/24", "via", "10.0.1.1", "advmss", str(ADVMSS)],
            check=True,
        )
        yield far, tap
    finally:
        if tap is not None:
            tap.close()
        far.delete()


async def sizes_seen(far: Netns, transfer: asyncio.Future[None]) -> list[int]:
    """Data segment sizes from the stack that tcpdump sees on the far host's veth."""
    dump = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", far.name, "tcpdump", "-i", "mssh", "-n", "-l", "-c", "300",
        f"tcp and src host {STACK_IP} and greater 200",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(0.5)  # tcpdump is listening
    transfer.set_result(None)
    try:
        out, _ = await asyncio.wait_for(dump.communicate(), 20)
    finally:
        if dump.returncode is None:
            dump.kill()
            await dump.wait()
    return [int(m) for m in re.findall(r"length (\d+)", out.decode())]


async def test_tso_segments_on_the_wire_fit_the_mss_the_far_end_announced(
    routed: tuple[Netns, TapNic],
) -> None:
    far, tap = routed
    cfg = StackConfig(
        nic=tap, ip=STACK_CIDR, mac=STACK_MAC.hex(":"), gateway=KERNEL_IP, tcp=fast_tcp()
    )
    loop = asyncio.get_running_loop()
    async with Stack(cfg) as stack:
        # Active open: the stack connects (the SYN-ACK says MSS 500) and sends.
        proc = await python_in_ns(far, SERVER)
        assert proc.stdout is not None
        go: asyncio.Future[None] = loop.create_future()
        seen = asyncio.ensure_future(sizes_seen(far, go))
        await go
        _r, w = await stack.open_connection(FAR_IP, 9001)
        assert w.get_extra_info("stack_tcp_info")["mss"] == EXPECTED
        w.write(b"a" * NBYTES)
        await w.drain()
        w.close()
        assert int(await asyncio.wait_for(proc.stdout.readline(), 30)) == NBYTES
        await proc.wait()
        active = await seen

        # Passive open: the far host connects (its SYN says MSS 500) and receives.
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"p" * NBYTES)
            await w.drain()
            w.close()

        srv = await stack.start_server(handler, STACK_IP, 9000)
        go = loop.create_future()
        seen = asyncio.ensure_future(sizes_seen(far, go))
        await go
        rc, out, err = await run_in_ns(far, ["python3", "-c", CLIENT], timeout=60)
        assert rc == 0 and int(out) == NBYTES, err
        passive = await seen
        srv.close()
        tso = stack.stats()["tcp"]["tso_segments_sent"]
    print(f"on the wire: active open max {max(active)}, passive open max {max(passive)} "
          f"({len(active)}+{len(passive)} segments seen, {tso} super-segments sent)")  # fmt: skip
    assert tso > 10  # the stack really handed the TAP super-segments
    assert max(active) == EXPECTED and max(passive) == EXPECTED
