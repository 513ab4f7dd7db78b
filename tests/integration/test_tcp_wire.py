"""Stack <-> stack TCP over the in-memory wire, through the seeded fault injector.

Every byte must arrive once and in order (sha256) in both directions, whatever the wire
does: loss, reordering, duplication, corruption.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

from anp_async.nic.faults import FaultConfig
from tests.stackutil import ALL_MODES, fast_tcp, wire_stacks

MiB = 1024 * 1024


async def exchange(a, b, n: int, port: int = 9000) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Send ``n`` seeded bytes each way at once over one connection; return the hashes."""
    data_ab = random.Random(1).randbytes(n)
    data_ba = random.Random(2).randbytes(n)
    got: dict[str, str] = {}
    served = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send() -> None:
            writer.write(data_ba)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        h = hashlib.sha256()
        while chunk := await reader.read(1 << 20):
            h.update(chunk)
        got["at_b"] = h.hexdigest()
        await sender
        writer.close()
        served.set_result(None)

    server = await b.start_server(serve, "10.0.0.2", port)
    reader, writer = await a.open_connection("10.0.0.2", port)

    async def send_a() -> None:
        writer.write(data_ab)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send_a())
    h = hashlib.sha256()
    while chunk := await reader.read(1 << 20):
        h.update(chunk)
    got["at_a"] = h.hexdigest()
    await sender
    writer.close()
    await writer.wait_closed()
    await served  # the server has read everything we sent
    server.close()
    assert got["at_a"] == hashlib.sha256(data_ba).hexdigest()
    assert got["at_b"] == hashlib.sha256(data_ab).hexdigest()
    return got


@pytest.mark.parametrize("mode", ALL_MODES)
async def test_clean_wire_both_ways(mode: str) -> None:
    async with wire_stacks(mode) as (a, b):
        await asyncio.wait_for(exchange(a, b, 4 * MiB), 120)


FAULTS = {
    "loss1": FaultConfig(loss=0.01, seed=1),
    "loss5": FaultConfig(loss=0.05, seed=2),
    "loss20": FaultConfig(loss=0.20, seed=3),
    "reorder": FaultConfig(reorder=0.05, reorder_delay=0.002, seed=4),
    "duplicate": FaultConfig(duplicate=0.05, seed=5),
    "corrupt": FaultConfig(corrupt=0.03, seed=6),
    "everything": FaultConfig(loss=0.02, reorder=0.03, duplicate=0.02, corrupt=0.01, seed=7),
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(FAULTS))
async def test_10mib_each_way_through_faults(name: str) -> None:
    faults = FAULTS[name]
    # The wire's round trip is well under a millisecond: a 10 ms minimum RTO (a
    # data-centre setting) instead of 50 ms keeps 20% loss from taking minutes.
    async with wire_stacks("interrupt", faults=faults, tcp=fast_tcp(rto_min=0.01)) as (a, b):
        await asyncio.wait_for(exchange(a, b, 10 * MiB), 600)
        injected = {
            k: a.stats()["nic"]["faults"][k] + b.stats()["nic"]["faults"][k]
            for k in ("dropped", "reordered", "duplicated", "corrupted")
        }
        assert sum(injected.values()) > 0  # the wire really misbehaved
        if faults.corrupt:
            bad = sum(
                s.stats()[layer].get(k, 0)
                for s in (a, b)
                for layer, k in (("tcp", "tcp_bad_checksum"), ("ip", "ip_bad_checksum"))
            )
            assert bad > 0  # corrupted frames were caught by a checksum and dropped
        print(
            name,
            injected,
            {k: v for k, v in a.stats()["tcp"].items() if k.startswith("conn_") and "retrans" in k},
        )


async def test_reuse_port_servers_share_a_port_and_split_the_connections() -> None:
    # asyncio's create_server(reuse_port=True): SO_REUSEPORT's sharing, on the stack.
    async with wire_stacks("interrupt") as (a, b):
        served: dict[str, int] = {"one": 0, "two": 0}

        def server_named(name: str):  # type: ignore[no-untyped-def]
            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                served[name] += 1
                writer.write(await reader.read(100))
                writer.close()

            return serve

        one = await b.start_server(server_named("one"), "10.0.0.2", 9400, reuse_port=True)
        with pytest.raises(OSError):
            await b.start_server(server_named("two"), "10.0.0.2", 9400)  # without it
        two = await b.start_server(server_named("two"), "10.0.0.2", 9400, reuse_port=True)
        for i in range(24):
            reader, writer = await a.open_connection("10.0.0.2", 9400)
            writer.write(b"%d" % i)
            assert await asyncio.wait_for(reader.read(100), 10) == b"%d" % i
            writer.close()
        assert served["one"] + served["two"] == 24 and served["one"] and served["two"]
        one.close()
        two.close()


async def test_a_stack_reaches_its_own_address() -> None:
    # TCP, UDP and ICMP to the stack's own address come back in (loopback.py), as
    # Linux's traffic to its own address goes through lo; nothing of it reaches the wire.
    async with wire_stacks("interrupt") as (a, _b):
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(1 << 16):
                writer.write(data)
            writer.close()

        server = await a.start_server(echo, "10.0.0.1", 9500)
        sent_before = a.nic.stats.tx_frames
        reader, writer = await a.open_connection("10.0.0.1", 9500)
        blob = random.Random(5).randbytes(1 << 20)
        writer.write(blob)
        assert await asyncio.wait_for(reader.readexactly(len(blob)), 30) == blob
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await a.open_connection("10.0.0.1", 9501)
        assert await a.ping("10.0.0.1", timeout=2) >= 0
        server.close()
        assert a.nic.stats.tx_frames == sent_before
        assert a.stats()["loopback"]["frames"] > 0
