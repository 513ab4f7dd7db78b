"""IPv6 against the Linux kernel over a TAP in a namespace this test creates.

The kernel end has fd00::1/64 (and its link-local address), the stack fd00::2/64 beside
10.0.0.2. Real tools are the peers: ``ping -6`` both ways, a kernel TCP echo client and
server, UDP, curl -6 against the stack's HTTP responder. MLD reports and router
solicitations the kernel sends are ignored by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator, Iterator

import pytest

from anp_async import Stack, StackConfig
from anp_async.nic.netns import Netns
from anp_async.nic.tap import TapNic
from tests.netutil import CONNECT_PROBE, KERNEL_CIDR, STACK_CIDR, STACK_MAC, TAP_NAME
from tests.stackutil import fast_tcp, ping_received, run_in_ns

K6 = "fd00::1"
S6 = "fd00::2"


@pytest.fixture
def tap6(netns: Netns) -> Iterator[tuple[Netns, TapNic]]:
    tap = TapNic.open(TAP_NAME, peer=KERNEL_CIDR, peer6=f"{K6}/64", netns=netns)
    try:
        yield netns, tap
    finally:
        tap.close()


@pytest.fixture
def tap6_offload(netns: Netns) -> Iterator[tuple[Netns, TapNic]]:
    """As ``tap6`` with the virtio-net header (what ``anp up`` opens): the kernel may
    hand over TCPv6 super-frames and partial checksums."""
    tap = TapNic.open(TAP_NAME, peer=KERNEL_CIDR, peer6=f"{K6}/64", netns=netns, vnet_hdr=True)
    try:
        yield netns, tap
    finally:
        tap.close()


@contextlib.asynccontextmanager
async def stack6(tap: TapNic) -> AsyncIterator[Stack]:
    cfg = StackConfig(
        nic=tap, ip=STACK_CIDR, ip6=f"{S6}/64", mac=STACK_MAC.hex(":"), tcp=fast_tcp()
    )
    async with Stack(cfg) as stack:
        assert stack.v6 is not None
        for _ in range(300):  # DAD: one probe, RetransTimer 1 s (RFC 4862)
            if stack.v6.ready:
                break
            await asyncio.sleep(0.01)
        assert stack.v6.ready and not stack.v6.dad.duplicates
        yield stack


async def test_ping6_both_ways_and_kernel_noise_ignored(tap6) -> None:
    ns, tap = tap6
    async with stack6(tap) as stack:
        rc, out, err = await run_in_ns(ns, ["ping", "-6", "-c", "20", "-i", "0.01", "-W", "1", S6])
        assert ping_received(out) == 20, out + err
        # the link-local address, scoped to the TAP
        ll = stack.stats()["ipv6"]["link_local"]
        rc, out, err = await run_in_ns(
            ns, ["ping", "-6", "-c", "3", "-i", "0.01", f"{ll}%{TAP_NAME}"]
        )
        assert ping_received(out) == 3, out + err
        rtts = [await stack.ping(K6, timeout=2) for _ in range(5)]
        assert all(0 < r < 2 for r in rtts)
        st = stack.stats()["ipv6"]
        assert st["icmp"]["echo_requests"] >= 23 and st["icmp"]["echo_replies"] == 5
        assert st["icmp"]["ns_received"] >= 1  # the kernel resolved us by ND
        # nothing the kernel sent was unparseable
        assert not [k for k in st["icmp"] if k.startswith(("icmp6_", "nd_"))], st["icmp"]
        # IPv4 beside it
        assert await stack.ping("10.0.0.1", timeout=2) > 0


TCP_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection((sys.argv[1], 7), timeout=5)
    data = bytes(range(256)) * 1000
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    print("ok" if got == data else f"bad {len(got)}", s.getsockname()[0])
""")

UDP_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.settimeout(2)
    ok = 0
    for i in range(10):
        s.sendto(b"dgram%d" % i + bytes(3000), (sys.argv[1], 9))
        data, addr = s.recvfrom(65536)
        ok += data == b"dgram%d" % i + bytes(3000)
    print(ok)
""")


async def test_tcp_and_udp_from_kernel(tap6) -> None:
    ns, tap = tap6
    async with stack6(tap) as stack:

        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.read())
            await w.drain()
            w.close()

        server = await stack.start_server(echo, "::", 7)

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: object) -> None:
                self.t.sendto(data, addr)  # type: ignore[attr-defined]

        ut, _ = await stack.create_datagram_endpoint(Udp, local_addr=("::", 9))
        rc, out, err = await run_in_ns(ns, ["python3", "-c", TCP_CLIENT, S6])
        assert out.split() == ["ok", K6], out + err
        rc, out, err = await run_in_ns(ns, ["python3", "-c", UDP_CLIENT, S6])
        assert out.strip() == "10", out + err  # 3 KiB datagrams: fragmented both ways
        assert stack.stats()["ipv6"]["ip"]["reassembly_reassembled"] >= 10
        # curl -6 to an HTTP responder on the stack
        server.close()

        async def http(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readuntil(b"\r\n\r\n")
            body = b"hello over IPv6\n"
            w.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                + body
            )
            await w.drain()
            w.close()

        server = await stack.start_server(http, "::", 80)
        rc, out, err = await run_in_ns(ns, ["curl", "-6", "-sS", "-m", "5", f"http://[{S6}]/"])
        assert out == "hello over IPv6\n", out + err
        server.close()
        ut.close()


KERNEL_SERVER = textwrap.dedent("""
    import socket
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", 7007))
    srv.listen()
    print("listening", flush=True)
    srv.settimeout(10)
    c, addr = srv.accept()
    data = b""
    while not data.endswith(b"END"):
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    c.sendall(data[::-1])
    c.close()
""")


async def test_stack_reaches_kernel_ipv6_server(tap6_offload) -> None:
    ns, tap = tap6_offload
    async with stack6(tap) as stack:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns.name, "python3", "-c", KERNEL_SERVER,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"listening\n"
            reader, writer = await stack.open_connection(K6, 7007)
            assert writer.get_extra_info("peername") == (K6, 7007, 0, 0)
            payload = b"x" * 200000 + b"END"
            writer.write(payload)
            got = await asyncio.wait_for(reader.read(), 10)
            assert got == payload[::-1]
            # TSO6: super-segments the kernel cut and checksummed (it would drop bad ones)
            assert stack.stats()["tcp"]["tso_segments_sent"] > 0
            writer.close()
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_create_server_family_limits_the_listener(tap6) -> None:
    """``create_server(family=AF_INET)`` listens for IPv4 only (as asyncio's does on a
    kernel socket): a kernel client's IPv6 SYN is refused, and the other way round."""
    import socket

    ns, tap = tap6
    async with stack6(tap) as stack:
        for family, port, ok, refused in (
            (socket.AF_INET, 8001, "10.0.0.2", S6),
            (socket.AF_INET6, 8002, S6, "10.0.0.2"),
        ):
            server = await stack.create_server(asyncio.Protocol, None, port, family=family)
            try:
                for host, want in ((ok, "connected"), (refused, "refused")):
                    rc, out, err = await run_in_ns(ns, ["python3", "-c", CONNECT_PROBE, host, str(port)])
                    assert out.strip() == want, (family, host, out, err)
            finally:
                server.close()
        assert stack.stats()["tcp"]["listen_other_family"] == 2
