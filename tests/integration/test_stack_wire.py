"""Two stacks on the in-memory wire: ping and UDP in every receive mode, also through loss."""

from __future__ import annotations

import asyncio
import socket

import pytest

from anp_async.nic.faults import FaultConfig
from anp_async.proto import icmp
from tests.stackutil import ALL_MODES, wire_stacks


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple[str, int]]] = []
        self.errors: list[Exception] = []
        self.lost = asyncio.get_running_loop().create_future()
        self.event = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((data, addr))
        self.event.set()

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)
        self.event.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ALL_MODES)
async def test_ping_both_ways(mode: str) -> None:
    async with wire_stacks(mode) as (a, b):
        for _ in range(5):
            assert await a.ping("10.0.0.2") >= 0
            assert await b.ping("10.0.0.1") >= 0
        assert a.stats()["icmp"]["echo_replies"] == 5
        assert b.stats()["icmp"]["echo_requests"] == 5
        assert a.stats()["mode"]["name"] == mode
        assert a.stats()["mode"]["frames"] >= 10


@pytest.mark.parametrize("mode", ALL_MODES)
async def test_udp_echo(mode: str) -> None:
    async with wire_stacks(mode) as (a, b):
        await b.create_datagram_endpoint(Echo, local_addr=("10.0.0.2", 7))
        tr, pr = await a.create_datagram_endpoint(Collector, remote_addr=("10.0.0.2", 7))
        payloads = [bytes([i]) * (1 + 37 * i) for i in range(20)]
        for p in payloads:
            tr.sendto(p)
        async with asyncio.timeout(5):
            while len(pr.got) < len(payloads):
                pr.event.clear()
                await pr.event.wait()
        assert [d for d, _ in pr.got] == payloads
        assert {addr for _, addr in pr.got} == {("10.0.0.2", 7)}
        assert tr.get_extra_info("peername") == ("10.0.0.2", 7)
        tr.close()
        assert await pr.lost is None


async def test_udp_large_datagram_fragments_and_reassembles() -> None:
    async with wire_stacks("interrupt") as (a, b):
        await b.create_datagram_endpoint(Echo, local_addr=("10.0.0.2", 9))
        tr, pr = await a.create_datagram_endpoint(Collector, remote_addr=("10.0.0.2", 9))
        big = bytes(range(256)) * 200  # 51200 bytes: 36 fragments each way
        tr.sendto(big)
        async with asyncio.timeout(5):
            await pr.event.wait()
        assert pr.got[0][0] == big
        assert a.stats()["ip"]["fragmented"] >= 1
        assert b.stats()["ip"]["reassembled"] >= 1


async def test_udp_closed_port_gets_port_unreachable() -> None:
    async with wire_stacks("interrupt") as (a, b):
        tr, pr = await a.create_datagram_endpoint(Collector, remote_addr=("10.0.0.2", 4444))
        tr.sendto(b"anyone?")
        async with asyncio.timeout(5):
            await pr.event.wait()
        assert isinstance(pr.errors[0], ConnectionRefusedError)
        assert b.stats()["udp"]["port_unreachable_sent"] == 1


async def test_udp_port_in_use() -> None:
    async with wire_stacks("interrupt") as (a, _b):
        await a.create_datagram_endpoint(Echo, local_addr=("10.0.0.1", 5353))
        with pytest.raises(OSError) as info:
            await a.create_datagram_endpoint(Echo, local_addr=("10.0.0.1", 5353))
        assert info.value.errno == 98  # EADDRINUSE


async def test_udp_shared_port_reaches_the_connected_endpoint_else_the_newest() -> None:
    # share_port (what a preloaded socket's SO_REUSEADDR asks) as Linux: endpoints that
    # all set it bind one port; a datagram goes to the one connected to its source, else
    # to the newest unconnected one; with only another peer's connected endpoint left,
    # the port answers as closed (port unreachable).
    async with wire_stacks("interrupt") as (a, b):
        port = ("10.0.0.2", 5201)
        old, p_old = await b.create_datagram_endpoint(Collector, local_addr=port, share_port=True)
        conn, p_conn = await b.create_datagram_endpoint(
            Collector, local_addr=port, remote_addr=("10.0.0.1", 4001), share_port=True
        )
        with pytest.raises(OSError) as info:
            await b.create_datagram_endpoint(Collector, local_addr=port)
        assert info.value.errno == 98  # EADDRINUSE: this one did not ask to share
        peer1, _ = await a.create_datagram_endpoint(
            Collector, local_addr=("10.0.0.1", 4001), remote_addr=port
        )
        peer2, p_peer2 = await a.create_datagram_endpoint(
            Collector, local_addr=("10.0.0.1", 4002), remote_addr=port
        )

        async def delivered(pr: Collector, n: int) -> list[bytes]:
            async with asyncio.timeout(5):
                while len(pr.got) + len(pr.errors) < n:
                    pr.event.clear()
                    await pr.event.wait()
            return [d for d, _ in pr.got]

        peer1.sendto(b"from 4001")
        peer2.sendto(b"from 4002")
        assert await delivered(p_conn, 1) == [b"from 4001"]
        assert await delivered(p_old, 1) == [b"from 4002"]
        new, p_new = await b.create_datagram_endpoint(Collector, local_addr=port, share_port=True)
        peer2.sendto(b"again")
        assert await delivered(p_new, 1) == [b"again"]
        old.close()
        new.close()
        await asyncio.sleep(0)
        peer2.sendto(b"anyone?")  # only the endpoint connected to 4001 holds the port now
        await delivered(p_peer2, 1)
        assert isinstance(p_peer2.errors[0], ConnectionRefusedError)
        counters = b.stats()["udp"]
        assert counters["not_from_connected_peer"] == 1
        assert counters["port_unreachable_sent"] == 1
        assert p_old.got == [(b"from 4002", ("10.0.0.1", 4002))] and len(p_conn.got) == 1
        for t in (conn, peer1, peer2):
            t.close()


async def test_ping_socket_sends_requests_and_gets_its_replies() -> None:
    # Linux's ping sockets (transport/ping.py): the request leaves with the socket's
    # identifier whatever the program wrote there, the reply comes back whole to that
    # socket only; anything but an echo request is EINVAL.
    async with wire_stacks("interrupt") as (a, b):
        tr, pr = await a.create_ping_endpoint(Collector, local_addr=("0.0.0.0", 4242))
        other, p_other = await a.create_ping_endpoint(Collector)
        assert tr.get_extra_info("sockname") == ("10.0.0.1", 4242)
        with pytest.raises(OSError) as info:
            await a.create_ping_endpoint(Collector, local_addr=("0.0.0.0", 4242))
        assert info.value.errno == 98  # EADDRINUSE
        tr.sendto(icmp.build_echo(icmp.ECHO_REQUEST, 7, 1, b"payload"), ("10.0.0.2", 0))
        async with asyncio.timeout(5):
            await pr.event.wait()
        (data, addr), = pr.got
        reply = icmp.parse_icmp(data)
        assert (reply.type, reply.ident, reply.seq) == (icmp.ECHO_REPLY, 4242, 1)
        assert bytes(reply.payload) == b"payload" and addr == ("10.0.0.2", 0)
        assert b.stats()["icmp"]["echo_requests"] == 1 and not p_other.got
        pr.event.clear()
        tr.sendto(icmp.build_echo(icmp.ECHO_REPLY, 7, 2, b"no"), ("10.0.0.2", 0))
        assert isinstance(pr.errors[0], OSError) and pr.errors[0].errno == 22  # EINVAL
        assert await a.ping("10.0.0.2") >= 0  # the stack's own pings still get theirs
        assert a.stats()["ping_sockets"]["echo_replies_delivered"] == 1
        tr.close()
        other.close()


async def test_udp_ttl_and_tos_from_the_socket_options() -> None:
    # setsockopt(IP_TTL / IP_TOS) on the endpoint's socket object shapes the header of
    # what it sends, as on Linux (-1: the default TTL again); the receiver reads the TTL.
    async with wire_stacks("interrupt") as (a, b):
        seen: list[tuple[int, int]] = []

        class Headers(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                seen.append((self.transport.rx_ttl, data[0]))  # type: ignore[attr-defined]

        await b.create_datagram_endpoint(Headers, local_addr=("10.0.0.2", 9999))
        tr, _ = await a.create_datagram_endpoint(Collector, remote_addr=("10.0.0.2", 9999))
        sock = tr.get_extra_info("socket")
        tr.sendto(b"\x00")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 7)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x28)
        tr.sendto(b"\x01")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, -1)
        tr.sendto(b"\x02")
        async with asyncio.timeout(5):
            while len(seen) < 3:
                await asyncio.sleep(0.01)
        assert seen == [(64, 0), (7, 1), (64, 2)]  # (the TOS byte: the preload UDP probe)
        tr.close()


async def test_ping_unresolvable_neighbour_is_ehostunreach() -> None:
    async with wire_stacks("interrupt") as (a, _b):
        a.arp.retry_interval = 0.05  # type: ignore[attr-defined]
        with pytest.raises(OSError) as info:
            await a.ping("10.0.0.77", timeout=10)
        assert info.value.errno == 113  # EHOSTUNREACH


@pytest.mark.parametrize("mode", ALL_MODES)
async def test_ping_and_udp_through_20_percent_loss(mode: str) -> None:
    faults = FaultConfig(loss=0.2, seed=7)
    async with wire_stacks(mode, faults=faults) as (a, b):
        answered = 0
        for _ in range(20):
            for _attempt in range(20):  # ping retries until one echo gets through
                try:
                    await a.ping("10.0.0.2", timeout=0.2)
                    answered += 1
                    break
                except TimeoutError:
                    continue
                except OSError as e:  # ARP gave up after its retries were all lost
                    assert e.errno == 113
                    continue
        assert answered == 20
        await b.create_datagram_endpoint(Echo, local_addr=("10.0.0.2", 7))
        tr, pr = await a.create_datagram_endpoint(Collector, remote_addr=("10.0.0.2", 7))
        sent = 200
        for i in range(sent):
            tr.sendto(i.to_bytes(4, "big"))
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)
        got = len(pr.got)
        lost_on_wire = a.stats()["nic"]["faults"]["dropped"] + b.stats()["nic"]["faults"]["dropped"]
        # Each echo crosses the wire twice: the loss is real, counted, and explains the gap.
        assert 0 < got < sent
        assert lost_on_wire >= sent - got
        assert len({d for d, _ in pr.got}) == got  # nothing duplicated


async def test_switch_modes_while_pinging_loses_nothing() -> None:
    async with wire_stacks("interrupt") as (a, b):
        order = ["coalesce", "poll", "adaptive", "interrupt"] * 3
        for i, mode in enumerate(order):
            b.set_mode(mode)
            a.set_mode(order[(i + 1) % len(order)])
            for _ in range(5):
                await a.ping("10.0.0.2", timeout=1)
        assert a.stats()["icmp"]["echo_replies"] == len(order) * 5


async def test_udp_reuse_port_endpoints_split_the_flows() -> None:
    # asyncio's create_datagram_endpoint(reuse_port=True): a reuseport group; each
    # sender's datagrams reach one member, and different senders spread over both.
    async with wire_stacks("interrupt") as (a, b):
        one, two = Collector(), Collector()
        here = ("10.0.0.2", 5300)
        t1, _ = await b.create_datagram_endpoint(lambda: one, local_addr=here, reuse_port=True)
        with pytest.raises(OSError):
            await b.create_datagram_endpoint(Collector, local_addr=here)
        t2, _ = await b.create_datagram_endpoint(lambda: two, local_addr=here, reuse_port=True)
        senders = []
        for i in range(16):
            t, _ = await a.create_datagram_endpoint(Collector, remote_addr=("10.0.0.2", 5300))
            senders.append(t)
            for _ in range(3):
                t.sendto(b"%d" % i)
        deadline = asyncio.get_running_loop().time() + 5
        while len(one.got) + len(two.got) < 48 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert len(one.got) + len(two.got) == 48 and one.got and two.got
        # Every sender's three datagrams went to one member.
        assert not {addr for _, addr in one.got} & {addr for _, addr in two.got}
        for t in (t1, t2, *senders):
            t.close()
