"""The asyncio Transport contract of the stack's TCP transport, on the in-memory wire.

asyncio's own selector transports are the reference: write-buffer limits drive
pause_writing / resume_writing, pause_reading closes the advertised window (the peer
ends up probing a zero window) and resume_reading reopens it, write_eof half-closes,
close flushes then FINs, abort sends RST, connection_lost is called exactly once with
the right exception, and get_extra_info answers peername / sockname / socket.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.stackutil import wire_stacks


class Recorder(asyncio.Protocol):
    """Records every callback; ``lost`` resolves with connection_lost's argument."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.data = bytearray()
        self.eof = False
        self.calls: list[str] = []
        self.lost_calls = 0
        self.got_data = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.calls.append("made")
        self.made.set_result(transport)

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.got_data.set()

    def eof_received(self) -> bool:
        self.eof = True
        self.calls.append("eof")
        self.got_data.set()
        return True  # keep the transport open (half-close)

    def pause_writing(self) -> None:
        self.calls.append("pause")

    def resume_writing(self) -> None:
        self.calls.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_calls += 1
        self.calls.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


async def pair(a, b, port: int = 5000):  # type: ignore[no-untyped-def]
    """A connection a -> b; returns (client transport, client protocol, server protocol)."""
    servers: list[Recorder] = []

    def factory() -> Recorder:
        p = Recorder()
        servers.append(p)
        return p

    await b.create_server(factory, "10.0.0.2", port)
    tr, cp = await a.create_connection(Recorder, "10.0.0.2", port)
    await wait_for(lambda: servers)  # the server side completes on our ACK, just after us
    await asyncio.wait_for(servers[0].made, 5)
    return tr, cp, servers[0]


async def wait_for(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_extra_info_and_socket_object() -> None:
    async with wire_stacks() as (a, b):
        tr, _cp, sp = await pair(a, b)
        assert tr.get_extra_info("peername") == ("10.0.0.2", 5000)
        sockname = tr.get_extra_info("sockname")
        assert sockname[0] == "10.0.0.1" and 32768 <= sockname[1] < 61000
        assert sp.transport.get_extra_info("peername") == sockname
        sock = tr.get_extra_info("socket")
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
        assert sock.getpeername() == ("10.0.0.2", 5000)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert tr.get_extra_info("stack_tcp_info")["state"] == "ESTABLISHED"
        assert tr.get_extra_info("no-such-thing", "dflt") == "dflt"
        assert tr.can_write_eof() and not tr.is_closing()


async def test_write_buffer_limits_pause_and_resume_writing() -> None:
    async with wire_stacks() as (a, b):
        tr, cp, sp = await pair(a, b)
        sp.transport.pause_reading()  # the receiver stops reading: everything backs up
        tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        chunk = b"z" * 65536
        for _ in range(40):  # 2.5 MiB: more than both send and receive buffers hold
            tr.write(chunk)
        assert "pause" in cp.calls
        assert tr.get_write_buffer_size() > 64 * 1024
        # The receiver's window is closed now: the sender's view of it reaches zero.
        await wait_for(lambda: tr.get_extra_info("stack_tcp_info")["snd_wnd"] == 0)
        await asyncio.sleep(0.3)  # zero-window probes go out and are answered
        assert a.stats()["tcp"].get("conn_zero_window_probes", 0) >= 1
        sp.transport.resume_reading()
        await wait_for(lambda: len(sp.data) == 40 * 65536, timeout=20)
        assert bytes(sp.data) == chunk * 40
        await wait_for(lambda: "resume" in cp.calls)
        assert tr.get_write_buffer_size() == 0


async def test_pause_reading_is_idempotent_and_holds_data() -> None:
    async with wire_stacks() as (a, b):
        tr, _cp, sp = await pair(a, b)
        sp.transport.pause_reading()
        sp.transport.pause_reading()
        assert not sp.transport.is_reading()
        tr.write(b"held back")
        await asyncio.sleep(0.1)
        assert sp.data == b""
        sp.transport.resume_reading()
        sp.transport.resume_reading()
        await wait_for(lambda: sp.data == b"held back")


async def test_write_eof_half_closes_and_the_other_side_still_sends() -> None:
    async with wire_stacks() as (a, b):
        tr, cp, sp = await pair(a, b)
        tr.write(b"request")
        tr.write_eof()
        with pytest.raises(RuntimeError):
            tr.write(b"more")
        await wait_for(lambda: sp.eof)
        assert sp.data == b"request"
        sp.transport.write(b"response after your EOF")
        sp.transport.close()
        await wait_for(lambda: cp.eof)
        assert cp.data == b"response after your EOF"
        tr.close()
        assert await asyncio.wait_for(cp.lost, 5) is None
        assert await asyncio.wait_for(sp.lost, 5) is None
        assert cp.lost_calls == 1 and sp.lost_calls == 1


async def test_close_flushes_buffered_data_before_fin() -> None:
    async with wire_stacks() as (a, b):
        tr, cp, sp = await pair(a, b)
        payload = bytes(range(256)) * 8192  # 2 MiB: most of it still buffered at close()
        tr.write(payload)
        tr.close()
        assert tr.is_closing()
        await wait_for(lambda: sp.eof, timeout=20)
        assert bytes(sp.data) == payload
        assert await asyncio.wait_for(cp.lost, 5) is None
        assert cp.lost_calls == 1


async def test_abort_sends_rst_and_peer_sees_connection_reset() -> None:
    async with wire_stacks() as (a, b):
        tr, cp, sp = await pair(a, b)
        tr.write(b"x" * 1000)
        tr.abort()
        assert await asyncio.wait_for(cp.lost, 5) is None
        exc = await asyncio.wait_for(sp.lost, 5)
        assert isinstance(exc, ConnectionResetError)
        assert cp.lost_calls == 1 and sp.lost_calls == 1
        tr.close()  # closing an aborted transport is harmless
        await asyncio.sleep(0.05)
        assert cp.lost_calls == 1


async def test_refused_and_open_connection_streams() -> None:
    async with wire_stacks() as (a, b):
        with pytest.raises(ConnectionRefusedError):
            await a.open_connection("10.0.0.2", 1)

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            line = await r.readline()
            w.write(line.upper())
            await w.drain()
            w.close()
            await w.wait_closed()

        server = await b.start_server(handler, "10.0.0.2", 6000)
        async with server:
            assert server.is_serving()
            assert server.sockets[0].getsockname() == ("10.0.0.2", 6000)
            r, w = await a.open_connection("10.0.0.2", 6000)
            w.write(b"hello stream\n")
            assert await r.readline() == b"HELLO STREAM\n"
            assert await r.read() == b""
            w.close()
            await w.wait_closed()
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await a.open_connection("10.0.0.2", 6000)


async def test_serve_forever_cancelled_closes_server() -> None:
    async with wire_stacks() as (_a, b):
        server = await b.start_server(lambda r, w: None, "10.0.0.2", 6100, start_serving=False)
        assert not server.is_serving()
        task = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0.01)
        assert server.is_serving()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        await asyncio.wait_for(server.wait_closed(), 1)


async def test_peer_reset_while_reading_gives_connection_reset() -> None:
    async with wire_stacks() as (a, b):
        _tr, cp, sp = await pair(a, b)
        sp.transport.abort()
        exc = await asyncio.wait_for(cp.lost, 5)
        assert isinstance(exc, ConnectionResetError)


async def test_orphaned_fin_wait_2_is_bounded_in_time() -> None:
    """A closed transport whose peer never sends its FIN does not hold the TCB forever."""
    async with wire_stacks() as (a, b):
        a.tcp.orphan_fin_timeout = 0.3
        tr, cp, sp = await pair(a, b)
        key = next(iter(a.tcp.conns))
        tr.close()  # our FIN goes out and is ACKed; the peer never closes: FIN_WAIT_2
        assert await asyncio.wait_for(cp.lost, 5) is None
        await wait_for(lambda: a.tcp.conns[key].conn.state.name == "FIN_WAIT_2")
        await wait_for(lambda: key not in a.tcp.conns, timeout=3)
        assert a.stats()["tcp"]["orphan_fin_wait2_timeouts"] == 1
        # The peer's late FIN now meets a closed port and is answered with RST.
        sp.transport.close()
        await wait_for(lambda: a.stats()["tcp"].get("rst_sent", 0) >= 1)
