"""TSO against a kernel that announces a small MSS (``ip route ... advmss``), as a new user
meets it: the stack's super-segments must be cut at what the kernel announced, never at
the stack's own MSS. The kernel's ``ss -ti`` shows the segment size it received
(``rcvmss``: from the gso_size of our frames), in both directions of the open."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest

from anp_async import Stack, StackConfig
from anp_async.nic.netns import Netns
from anp_async.nic.tap import TapNic
from tests.netutil import KERNEL_CIDR, KERNEL_IP, STACK_CIDR, STACK_IP, STACK_MAC
from tests.stackutil import fast_tcp, run_in_ns

TAP = "anpmss0"
ADVMSS = 500
#: What each segment may carry: the announced MSS less the timestamp option (RFC 6691).
EXPECTED_MSS = ADVMSS - 12

CLIENT = f"""
import socket, subprocess, sys
c = socket.create_connection(("{STACK_IP}", 9000), timeout=30); n = 0; shown = False
while True:
    d = c.recv(1 << 20)
    if not d: break
    n += len(d)
    if n > 300000 and not shown:
        shown = True
        print(subprocess.run(["ss", "-tin"], capture_output=True, text=True).stdout, flush=True)
print("got", n, flush=True)
"""


@pytest.fixture
def mss_tap(netns: Netns) -> Iterator[tuple[Netns, TapNic]]:
    tap = TapNic.open(TAP, peer=KERNEL_CIDR, netns=netns, vnet_hdr=True)
    try:
        # The kernel announces MSS 500 on this route, as a path with a small MTU would.
        netns.run(
            ["ip", "route", "change", "10.0.0.0/24", "dev", TAP, "advmss", str(ADVMSS),
             "proto", "kernel", "scope", "link", "src", KERNEL_IP],
            check=True,
        )  # fmt: skip
        yield netns, tap
    finally:
        tap.close()


def rcvmss(ss_output: str) -> int:
    m = re.search(r"rcvmss:(\d+)", ss_output)
    assert m, ss_output
    return int(m.group(1))


async def test_tso_cuts_at_the_mss_the_kernel_announced(mss_tap: tuple[Netns, TapNic]) -> None:
    ns, tap = mss_tap
    cfg = StackConfig(nic=tap, ip=STACK_CIDR, mac=STACK_MAC.hex(":"), tcp=fast_tcp())
    async with Stack(cfg) as stack:
        # Passive open: the kernel connects (SYN with MSS 500) and receives.
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            assert w.get_extra_info("stack_tcp_info")["mss"] == EXPECTED_MSS
            w.write(b"p" * 1_000_000)
            await w.drain()
            w.close()

        srv = await stack.start_server(handler, STACK_IP, 9000)
        rc, out, err = await run_in_ns(ns, ["python3", "-c", CLIENT], timeout=60)
        assert rc == 0 and "got 1000000" in out, err
        passive = rcvmss(out)
        srv.close()
        # Active open: the stack connects (SYN-ACK with MSS 500) and sends.
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns.name, "python3", "-c",
            "import socket; s = socket.socket(); s.bind(('', 9001)); s.listen(1); "
            "print('ready', flush=True); c, _ = s.accept(); import time; n = 0\n"
            "while (d := c.recv(1 << 20)): n += len(d)\nprint(n, flush=True)",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        assert b"ready" in await asyncio.wait_for(proc.stdout.readline(), 10)
        r, w = await stack.open_connection(KERNEL_IP, 9001)
        assert w.get_extra_info("stack_tcp_info")["mss"] == EXPECTED_MSS
        w.write(b"a" * 1_000_000)
        await w.drain()
        _, ss_out, _ = await run_in_ns(ns, ["ss", "-tin", "sport", "= :9001"])
        active = rcvmss(ss_out)
        w.close()
        got = await asyncio.wait_for(proc.stdout.readline(), 30)
        await proc.wait()
        assert int(got) == 1_000_000
        tso = stack.stats()["tcp"]["tso_segments_sent"]
    print(f"kernel rcvmss: passive open {passive}, active open {active}; {tso} super-segments")
    assert tso > 10
    assert passive == EXPECTED_MSS and active == EXPECTED_MSS
