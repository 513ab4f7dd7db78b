"""A closed connection goes with its last reference, as an asyncio transport does: no
reference cycle keeps its state (buffers, the frames they view) for the cyclic garbage
collector. Two stacks over the in-memory wire."""

from __future__ import annotations

import asyncio
import gc
import socket

from anp_async.bench.apps import tcp_echo_handler
from anp_async.proto.tcp.connection import TcpConnection
from anp_async.transport.tcp import TcpTransport
from anp_async.transport.udp import DatagramTransport
from tests.stackutil import wire_stacks


async def test_closed_connections_leave_no_reference_cycles() -> None:
    async with wire_stacks() as (sa, sb):
        await sb.start_server(tcp_echo_handler, "10.0.0.2", 7)

        async def one() -> None:
            r, w = await sa.open_connection("10.0.0.2", 7)
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            w.write(b"x" * 5000)
            await w.drain()
            assert await r.readexactly(5000) == b"x" * 5000
            w.close()
            await w.wait_closed()

        await one()  # warm: whatever the first connection creates once
        udp, _ = await sa.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("0.0.0.0", 0)
        )
        udp.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        udp.close()
        await asyncio.sleep(0.2)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(5):
                await one()
            await asyncio.sleep(0.5)  # both ends through FIN and out of the tables
            gc.collect()
            kinds = (TcpTransport, TcpConnection, DatagramTransport)
            cyclic = [type(o).__name__ for o in gc.garbage if isinstance(o, kinds)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert cyclic == []


async def test_the_socket_object_is_stable_and_keeps_options() -> None:
    async with wire_stacks() as (sa, sb):
        await sb.start_server(tcp_echo_handler, "10.0.0.2", 7)
        _r, w = await sa.open_connection("10.0.0.2", 7)
        s1 = w.get_extra_info("socket")
        assert w.get_extra_info("socket") is s1  # the same object while it is held
        s1.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        del s1
        gc.collect()
        s2 = w.get_extra_info("socket")  # made again: the option is the transport's
        assert s2.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 4096
        assert s2.getpeername() == ("10.0.0.2", 7)
        w.close()
        await w.wait_closed()
