"""The reference echo application over kernel loopback sockets (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket

import pytest

from anp_async.apps.echo import (
    CHUNK,
    HEADER,
    PATTERN,
    ServedEcho,
    UdpEchoProtocol,
    echo_client,
    echo_handler,
    expected,
    first_mismatch,
    pattern_bytes,
    plain_echo_handler,
)
from anp_async.modes import MODES

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def connector(port: int):
    return lambda: asyncio.open_connection("127.0.0.1", port)


def test_pattern_is_periodic_and_sliceable():
    assert len(PATTERN) == 251
    whole = pattern_bytes(3 * CHUNK + 17)
    for off, n in [(0, 1), (250, 3), (251, 251), (CHUNK - 5, CHUNK), (2 * CHUNK + 9, CHUNK)]:
        assert expected(off, n) == whole[off : off + n]
    assert first_mismatch(whole, 0) is None
    assert first_mismatch(whole[1000:2000], 1000) is None
    bad = bytearray(whole[:5000])
    bad[4321] ^= 0x01
    assert first_mismatch(bytes(bad), 0) == 4321
    # A shifted stream (a lost byte) is caught at the first shifted position.
    assert first_mismatch(whole[1:300], 0) == 0
    with pytest.raises(ValueError):
        expected(0, CHUNK + 1)


async def test_echo_1mib_three_times_matches_and_server_checks():
    served: list[ServedEcho] = []
    handler = functools.partial(echo_handler, report=served.append)
    async with serve(handler) as port:
        results = await echo_client(connector(port), 1 << 20, 3, timeout=20)
    assert [r.index for r in results] == [1, 2, 3]
    assert all(r.ok and r.error is None for r in results), results
    assert all(r.size == 1 << 20 and r.seconds > 0 and r.mb_per_s > 0 for r in results)
    await asyncio.sleep(0.05)
    assert len(served) == 3 and all(s.ok and s.size == 1 << 20 for s in served)


async def test_zero_and_odd_sizes():
    async with serve(echo_handler) as port:
        for size in (0, 1, 250, 251, 252, CHUNK + 3):
            (res,) = await echo_client(connector(port), size, 1, timeout=10)
            assert res.ok, (size, res.error)


async def test_client_works_against_plain_rfc862_echo():
    async with serve(plain_echo_handler) as port:
        results = await echo_client(connector(port), 300_000, 2, timeout=10)
    assert all(r.ok for r in results), results


async def corrupting_echo(reader, writer, flip_at: int):
    """An RFC 862 echo that flips one payload bit at ``flip_at``: the client must notice."""
    pos = -HEADER.size
    while True:
        data = await reader.read(65536)
        if not data:
            break
        if pos <= flip_at < pos + len(data):
            b = bytearray(data)
            b[flip_at - pos] ^= 0x80
            data = bytes(b)
        pos += len(data)
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_corrupted_echo_is_detected():
    handler = functools.partial(corrupting_echo, flip_at=700_001)
    async with serve(handler) as port:
        (res,) = await echo_client(connector(port), 1 << 20, 1, timeout=10)
    assert not res.ok
    assert "mismatch at byte 700001" in res.error


async def truncating_echo(reader, writer):
    """Echo only the first 1000 bytes, then close: a short echo must fail."""
    data = await reader.readexactly(1000)
    writer.write(data)
    await writer.drain()
    writer.close()


async def test_short_echo_is_detected():
    async with serve(truncating_echo) as port:
        (res,) = await echo_client(connector(port), 1 << 20, 1, timeout=10)
    # Closing with unread data makes the kernel send RST: either way the echo failed.
    assert not res.ok
    assert "closed after" in res.error or "ConnectionResetError" in res.error


async def test_server_detects_a_corrupt_request_and_closes():
    served: list[ServedEcho] = []
    handler = functools.partial(echo_handler, report=served.append)
    async with serve(handler) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = bytearray(pattern_bytes(10_000))
        payload[5000] ^= 0xFF
        writer.write(HEADER.pack(len(payload)) + bytes(payload))
        await writer.drain()
        echoed = await asyncio.wait_for(reader.read(), 5)  # until the server closes
        writer.close()
    assert len(echoed) < HEADER.size + len(payload)
    assert len(served) == 1 and not served[0].ok
    assert "mismatch at byte 5000" in served[0].error


async def test_refused_connection_is_a_failed_result_not_an_exception():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = await echo_client(connector(port), 100, 2, timeout=5)
    assert len(results) == 2 and not any(r.ok for r in results)
    assert "ConnectionRefusedError" in results[0].error


async def test_udp_echo_protocol():
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        UdpEchoProtocol, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.setblocking(False)
            c.bind(("127.0.0.1", 0))
            payload = os.urandom(512)
            await loop.sock_sendto(c, payload, ("127.0.0.1", port))
            data = await asyncio.wait_for(loop.sock_recv(c, 2048), 5)
        assert data == payload and proto.echoed == 1
    finally:
        transport.close()


@pytest.mark.parametrize("mode", MODES)
async def test_stack_to_stack_over_the_wire(mode):
    """The same functions on two anp stacks joined by the in-memory wire."""
    from anp_async.nic.wire import Wire
    from anp_async.stack import Stack, StackConfig

    a, b = Wire.pair()
    served: list[ServedEcho] = []
    async with (
        Stack(StackConfig(nic=a, ip="10.0.0.1/24")) as client_stack,
        Stack(StackConfig(nic=b, ip="10.0.0.2/24", mode=mode)) as server_stack,
    ):
        handler = functools.partial(echo_handler, report=served.append)
        server = await server_stack.start_server(handler, "10.0.0.2", 7)
        try:
            results = await echo_client(
                lambda: client_stack.open_connection("10.0.0.2", 7), 1 << 20, 2, timeout=30
            )
        finally:
            server.close()
    assert [r.ok for r in results] == [True, True], results
    assert [s.ok for s in served] == [True, True]
