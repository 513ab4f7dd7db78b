"""Two stacks speaking IPv6 over the in-memory wire: ND, DAD, ping, TCP, UDP, fragments."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from anp_async import Stack, StackConfig
from anp_async.nic.faults import FaultConfig, FaultyNic
from anp_async.nic.wire import Wire
from anp_async.obs.ss import parse_filter, sockets
from anp_async.proto import nd
from anp_async.proto.ipv6 import ip6_to_bytes
from tests.stackutil import fast_tcp


@contextlib.asynccontextmanager
async def v6_stacks(dad: int = 1, mtu: int = 1500) -> AsyncIterator[tuple[Stack, Stack]]:
    nic_a, nic_b = Wire.pair()
    nic_a.mtu = nic_b.mtu = mtu
    a = StackConfig(
        nic=nic_a, ip="10.0.0.1/24", ip6="fd00::1/64", dad_transmits=dad, tcp=fast_tcp()
    )
    b = StackConfig(
        nic=nic_b, ip="10.0.0.2/24", ip6="fd00::2/64", dad_transmits=dad, tcp=fast_tcp()
    )
    async with Stack(a) as sa, Stack(b) as sb:
        yield sa, sb


async def _ready(*stacks: Stack) -> None:
    for _ in range(300):
        if all(s.v6 is not None and s.v6.ready for s in stacks):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("DAD did not finish")


async def test_dad_then_ping_both_ways_and_neighbour_states() -> None:
    async with v6_stacks() as (a, b):
        assert a.v6 is not None and b.v6 is not None
        assert not a.v6.ready  # tentative for RetransTimer (RFC 4862)
        # a ping sent now waits for DAD: a tentative address is no source (RFC 4862 5.4)
        assert await a.ping("fd00::2", timeout=3.0) > 0
        assert a.v6.ready and a.v6.counters["tentative_hold_dropped"] == 0
        await _ready(a, b)
        assert a.v6.counters["dad_done"] == 2  # link-local and fd00::1
        rtt = await a.ping("fd00::2", timeout=1.0)
        assert 0 < rtt < 1.0
        assert await b.ping("fd00::1", timeout=1.0) > 0
        assert await b.ping(str(a.v6.stats()["link_local"]), timeout=1.0) > 0
        assert a.v6.neighbors.state(ip6_to_bytes("fd00::2")) == nd.REACHABLE
        # b learnt a from its solicitation (STALE), then used it
        assert b.v6.neighbors.state(ip6_to_bytes("fd00::1")) in (nd.STALE, nd.DELAY, nd.REACHABLE)
        assert a.stats()["ipv6"]["icmp"]["echo_requests"] >= 1
        # IPv4 still works beside it
        assert await a.ping("10.0.0.2", timeout=1.0) > 0


async def test_duplicate_address_detected() -> None:
    nic_a, nic_b = Wire.pair()
    a = StackConfig(nic=nic_a, ip="10.0.0.1/24", ip6="fd00::5/64", dad_transmits=0)
    b = StackConfig(nic=nic_b, ip="10.0.0.2/24", ip6="fd00::5/64", dad_transmits=1)
    async with Stack(a) as sa, Stack(b) as sb:
        await asyncio.sleep(1.3)
        assert sa.v6 is not None and sb.v6 is not None
        assert sa.v6.ready and not sb.v6.ready
        assert sb.v6.stats()["duplicates"] == ["fd00::5"]


async def test_tcp_echo_over_ipv6_and_peername() -> None:
    async with v6_stacks(dad=0) as (a, b):
        seen: list[object] = []

        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            seen.append(w.get_extra_info("peername"))
            w.write(await r.read())
            await w.drain()
            w.close()

        server = await b.start_server(echo, "::", 7)
        reader, writer = await a.open_connection("fd00::2", 7)
        assert writer.get_extra_info("peername") == ("fd00::2", 7, 0, 0)
        assert writer.get_extra_info("sockname")[0] == "fd00::1"
        data = bytes(range(256)) * 400  # 100 KiB: many segments
        writer.write(data)
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(), 10)
        assert got == data
        assert seen[0][0] == "fd00::1" and len(seen[0]) == 4
        # MSS from the IPv6 MTU: 1500 - 40 - 20
        conn = next(iter(a.tcp.conns.values())).conn
        assert conn.cfg.mss == 1440
        writer.close()
        # the same listener takes IPv4 (one listener per port, both families)
        r4, w4 = await a.open_connection("10.0.0.2", 7)
        w4.write(b"v4")
        w4.write_eof()
        assert await asyncio.wait_for(r4.read(), 5) == b"v4"
        server.close()


async def test_a_server_per_family_on_one_port() -> None:
    # asyncio's create_server(family=...) twice on one port, as a program with an AF_INET
    # and an IPV6_V6ONLY socket has: each family reaches its own server; a server for
    # both families on that port is EADDRINUSE.
    async with v6_stacks(dad=0) as (a, b):

        def tagged(tag: bytes) -> object:
            async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                w.write(tag + await r.read())
                await w.drain()
                w.close()

            return serve

        s4 = await b.start_server(tagged(b"4:"), "0.0.0.0", 7, family=socket.AF_INET)
        s6 = await b.start_server(tagged(b"6:"), "::", 7, family=socket.AF_INET6)
        with pytest.raises(OSError) as e:
            await b.start_server(tagged(b"?"), "::", 7)
        assert e.value.errno == errno.EADDRINUSE
        for host, want in (("10.0.0.2", b"4:x"), ("fd00::2", b"6:x")):
            r, w = await a.open_connection(host, 7)
            w.write(b"x")
            w.write_eof()
            assert await asyncio.wait_for(r.read(), 5) == want
            w.close()
        s4.close()  # the IPv4 port is closed now; IPv6 still reaches its server
        with pytest.raises(ConnectionRefusedError):
            await a.open_connection("10.0.0.2", 7)
        r, w = await a.open_connection("fd00::2", 7)
        w.write_eof()
        assert await asyncio.wait_for(r.read(), 5) == b"6:"
        w.close()
        s6.close()


async def test_tcp_refused_over_ipv6() -> None:
    async with v6_stacks(dad=0) as (a, _b):
        with pytest.raises(ConnectionRefusedError):
            await a.open_connection("fd00::2", 9)


async def test_udp_fragments_and_port_unreachable() -> None:
    async with v6_stacks(dad=0) as (a, b):
        got: asyncio.Queue[tuple[bytes, object]] = asyncio.Queue()
        errors: list[Exception] = []

        class P(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                got.put_nowait((data, addr))

            def error_received(self, exc: Exception) -> None:
                errors.append(exc)

        tb, _ = await b.create_datagram_endpoint(P, local_addr=("::", 5000))
        assert tb.get_extra_info("sockname") == ("fd00::2", 5000, 0, 0)
        ta, _ = await a.create_datagram_endpoint(P, remote_addr=("fd00::2", 5000))
        big = bytes(range(256)) * 16  # 4 KiB: fragmented by the source (RFC 8200 (5))
        ta.sendto(big)
        data, addr = await asyncio.wait_for(got.get(), 5)
        assert data == big and addr[0] == "fd00::1" and len(addr) == 4
        assert a.stats()["ipv6"]["ip"]["fragmented"] == 1
        assert b.stats()["ipv6"]["ip"]["reassembly_reassembled"] == 1
        # a connected endpoint hears the port unreachable as ConnectionRefusedError
        tc, _ = await a.create_datagram_endpoint(P, remote_addr=("fd00::2", 5999))
        tc.sendto(b"x")
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.01)
        assert isinstance(errors[0], ConnectionRefusedError)


async def test_unreachable_neighbour_and_no_route() -> None:
    async with v6_stacks(dad=0) as (a, _b):
        with pytest.raises(OSError) as e:
            await a.ping("fd00::99", timeout=5.0)
        assert e.value.errno == errno.EHOSTUNREACH
        with pytest.raises(OSError) as e:
            await a.ping("2001:db8::1", timeout=1.0)
        assert e.value.errno == errno.ENETUNREACH


async def test_unmodified_asyncio_program_over_ipv6() -> None:
    """The stack's event loop (``anp run --inprocess``): plain asyncio calls with IPv6."""
    import socket

    from anp_async.install import installed

    async with v6_stacks(dad=0) as (a, b):
        loop = asyncio.get_running_loop()

        async def upper(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write((await r.read()).upper())
            await w.drain()
            w.close()

        with installed(b):
            server = await asyncio.start_server(upper, "::", 8080)
        with installed(a):
            infos = await loop.getaddrinfo("fd00::2", 8080, type=socket.SOCK_STREAM)
            assert infos == [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::2", 8080, 0, 0))]
            reader, writer = await asyncio.open_connection("fd00::2", 8080)
            assert writer.get_extra_info("peername") == ("fd00::2", 8080, 0, 0)
            writer.write(b"dual stack")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b"DUAL STACK"
            writer.close()
            got: asyncio.Future[tuple[bytes, object]] = loop.create_future()

            class Client(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: object) -> None:
                    got.set_result((data, addr))

        with installed(b):

            class Echo(asyncio.DatagramProtocol):
                def connection_made(self, transport: asyncio.BaseTransport) -> None:
                    self.t = transport

                def datagram_received(self, data: bytes, addr: object) -> None:
                    self.t.sendto(data[::-1], addr)  # type: ignore[attr-defined]

            echo_t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("::", 5353))
        with installed(a):
            t, _ = await loop.create_datagram_endpoint(Client, remote_addr=("fd00::2", 5353))
            t.sendto(b"abc")
            assert await asyncio.wait_for(got, 5) == (b"cba", ("fd00::2", 5353, 0, 0))
            t.close()
        echo_t.close()
        server.close()


async def test_packet_too_big_lowers_the_path_mtu() -> None:
    """RFC 8201: after a Packet Too Big (MTU 1300) the source fragments what is larger."""
    from anp_async.proto import icmpv6
    from anp_async.proto.ipv6 import NH_ICMPV6, build_ipv6_header

    async with v6_stacks(dad=0) as (a, b):
        assert a.v6 is not None and b.v6 is not None
        got: asyncio.Queue[bytes] = asyncio.Queue()

        class P(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                got.put_nowait(data)

        await b.create_datagram_endpoint(P, local_addr=("::", 6000))
        ta, _ = await a.create_datagram_endpoint(P, remote_addr=("fd00::2", 6000))
        ta.sendto(b"x" * 1400)  # fits the link's 1500
        assert await asyncio.wait_for(got.get(), 5) == b"x" * 1400
        assert a.v6.counters["fragmented"] == 0
        quote = build_ipv6_header(a.v6.ip_b, b.v6.ip_b, 17, 1408) + bytes(48)
        too_big = icmpv6.build_error(
            icmpv6.PACKET_TOO_BIG, 0, quote, b.v6.ip_b, a.v6.ip_b, rest=1300
        )
        b.send_ip(a.v6.ip_b, NH_ICMPV6, [too_big])
        for _ in range(100):
            if a.v6.path_mtu(b.v6.ip_b) == 1300:
                break
            await asyncio.sleep(0.01)
        assert a.v6.path_mtu(b.v6.ip_b) == 1300
        ta.sendto(b"y" * 1400)
        assert await asyncio.wait_for(got.get(), 5) == b"y" * 1400
        assert a.v6.counters["fragmented"] == 1
        # a larger "MTU" than the path's is ignored; below 1280 counts as 1280 (RFC 8201)
        a.v6._learn_pmtu(b.v6.ip_b, 1400)
        assert a.v6.path_mtu(b.v6.ip_b) == 1300
        a.v6._learn_pmtu(b.v6.ip_b, 500)
        assert a.v6.path_mtu(b.v6.ip_b) == 1280


def test_ipv6_configuration_checked() -> None:
    nic_a, nic_b = Wire.pair()
    try:
        for bad in ("fd00::2/129", "ff02::1/64", "::1/128", "not-an-address"):
            with pytest.raises(ValueError):
                StackConfig(nic=nic_a, ip6=bad)
        with pytest.raises(ValueError):
            StackConfig(nic=nic_a, ip6="fd00::2/64", dad_transmits=-1)
        with pytest.raises(ValueError, match="1280"):
            Stack(StackConfig(nic=nic_a, ip6="fd00::2/64", mtu=1000))
    finally:
        nic_a.close()
        nic_b.close()


async def test_udp_endpoints_per_family_share_a_port() -> None:
    # v4=/v6= (the stack's keywords, which the preload library passes for AF_INET and
    # IPV6_V6ONLY sockets): each family's datagrams reach their own endpoint; an
    # endpoint for both families on that port is EADDRINUSE; a family nobody hears there
    # gets port unreachable.
    async with v6_stacks(dad=0) as (a, b):
        got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        def tagged(tag: str) -> Callable[[], asyncio.DatagramProtocol]:
            class P(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: object) -> None:
                    got.put_nowait((tag, data))

            return P

        t4, _ = await b.create_datagram_endpoint(tagged("4"), local_addr=("0.0.0.0", 5300), v6=False)
        t6, _ = await b.create_datagram_endpoint(tagged("6"), local_addr=("::", 5300), v4=False)
        with pytest.raises(OSError) as e:
            await b.create_datagram_endpoint(tagged("?"), local_addr=("::", 5300))
        assert e.value.errno == errno.EADDRINUSE
        sender, _ = await a.create_datagram_endpoint(tagged("a"), local_addr=("::", 0))
        sender.sendto(b"x", ("10.0.0.2", 5300))
        assert await asyncio.wait_for(got.get(), 5) == ("4", b"x")
        sender.sendto(b"y", ("fd00::2", 5300))
        assert await asyncio.wait_for(got.get(), 5) == ("6", b"y")
        t4.close()
        await asyncio.sleep(0)
        sender.sendto(b"z", ("10.0.0.2", 5300))  # nobody hears IPv4 there now
        for _ in range(100):
            if b.stats()["udp"].get("port_unreachable_sent"):
                break
            await asyncio.sleep(0.01)
        assert b.stats()["udp"]["port_unreachable_sent"] == 1 and got.empty()
        assert b.stats()["udp"]["endpoints"] == 1
        t6.close()
        sender.close()


async def test_ss_shows_each_family_socket_on_its_own_row() -> None:
    # As ss on Linux: an AF_INET and an IPV6_V6ONLY listener on one port are two LISTEN
    # rows with their own queues; a dual-stack one is *:PORT; IPv6 peers are bracketed.
    async with v6_stacks(dad=0) as (a, b):

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.read())
            await w.drain()
            w.close()

        s4 = await b.start_server(serve, "0.0.0.0", 7, family=socket.AF_INET, backlog=5)
        s6 = await b.start_server(serve, "::", 7, family=socket.AF_INET6, backlog=9)
        dual = await b.start_server(serve, "::", 8)
        u4, _ = await b.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("0.0.0.0", 5300), v6=False
        )
        u6, _ = await b.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("::", 5300), v4=False
        )
        peer, _ = await a.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("::", 0)
        )
        r, w = await a.open_connection("fd00::2", 7)
        for _ in range(100):  # until b has taken the handshake's last ACK
            rows = sockets(b.stats())
            if any(x["state"] == "ESTABLISHED" for x in rows):
                break
            await asyncio.sleep(0.01)
        listen = sorted((x["local"], x["send_q"]) for x in rows if x["state"] == "LISTEN")
        assert listen == [("*:8", 100), ("10.0.0.2:7", 5), ("[fd00::2]:7", 9)], rows
        udp = sorted(x["local"] for x in rows if x["proto"] == "udp")
        assert udp == ["10.0.0.2:5300", "[fd00::2]:5300"], rows
        (est,) = [x for x in rows if x["state"] == "ESTABLISHED"]
        assert est["local"] == "[fd00::2]:7" and est["remote"].startswith("[fd00::1]:"), est
        assert parse_filter(["dst", "fd00::1"])(est)
        w.write_eof()
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        for t in (u4, u6, peer):
            t.close()
        for srv in (s4, s6, dual):
            srv.close()


async def test_icmpv6_ping_socket() -> None:
    # An ICMPv6 ping socket (transport/ping.py): the request leaves with the socket's
    # identifier and a checksum over the pseudo-header, the reply comes back whole.
    async with v6_stacks(dad=0) as (a, _b):
        got: asyncio.Queue[tuple[bytes, object]] = asyncio.Queue()

        class P(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                got.put_nowait((data, addr))

        tr, _ = await a.create_ping_endpoint(P, local_addr=("::", 777), v6=True)
        request = bytes([128, 0, 0, 0, 0, 1, 0, 5]) + b"six"  # (identifier 1, no checksum)
        tr.sendto(request, ("fd00::2", 0))
        data, addr = await asyncio.wait_for(got.get(), 5)
        assert data[0] == 129 and data[4:8] == (777 << 16 | 5).to_bytes(4, "big")
        assert data[8:] == b"six" and addr == ("fd00::2", 0, 0, 0)
        tr.close()


async def test_ecn_over_ipv6_marks_instead_of_loss() -> None:
    # RFC 3168 over IPv6: new data leaves ECT(0) in the traffic class; a router that
    # marks CE (the fault NIC on a's transmit side) reaches b, which echoes ECE; a halves
    # cwnd and sends CWR, and nothing is retransmitted.
    nic_a, nic_b = Wire.pair()
    faulty = FaultyNic(nic_a, FaultConfig(ce_mark=0.02, seed=13, direction="tx"))
    tcp = fast_tcp(ecn=True)
    a = StackConfig(nic=faulty, ip="10.0.0.1/24", ip6="fd00::1/64", dad_transmits=0, tcp=tcp)
    b = StackConfig(nic=nic_b, ip="10.0.0.2/24", ip6="fd00::2/64", dad_transmits=0, tcp=tcp)
    data = bytes(range(256)) * 8192  # 2 MiB
    async with Stack(a) as sa, Stack(b) as sb:

        async def count(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            n = 0
            while chunk := await r.read(1 << 20):
                n += len(chunk)
            w.write(str(n).encode())
            await w.drain()
            w.close()

        server = await sb.start_server(count, "::", 7100)
        reader, writer = await sa.open_connection("fd00::2", 7100)
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 30) == str(len(data)).encode()
        info = writer.get_extra_info("stack_tcp_info")
        writer.close()
        server.close()
        ta, tb = sa.stats()["tcp"], sb.stats()["tcp"]
    assert info["ecn"] is True and info["bytes_retrans"] == 0
    assert faulty.fault_stats["ce_marked"] > 0  # so the data was ECT
    assert tb.get("conn_ecn_ce_rx", 0) > 0
    assert ta.get("conn_ecn_reductions", 0) > 0 and ta.get("conn_ecn_cwr_sent", 0) > 0


async def test_a_stack_reaches_its_own_ipv6_address() -> None:
    # As over IPv4 (loopback.py): TCP and a ping to our own IPv6 address come back in.
    async with v6_stacks(dad=0) as (a, _b):

        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.read())
            w.close()

        server = await a.start_server(echo, "::", 7)
        sent_before = a.nic.stats.tx_frames
        reader, writer = await a.open_connection("fd00::1", 7)
        data = bytes(range(256)) * 400
        writer.write(data)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == data
        writer.close()
        assert await a.ping("fd00::1", timeout=2) >= 0
        server.close()
        assert a.nic.stats.tx_frames == sent_before
