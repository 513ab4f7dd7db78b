"""The ACK a receive batch owes rides on the application's reply (``TcpLayer.flush_dirty``).

A request of three full segments asks for an ACK at once (RFC 5681 4.2: at least every
second full-sized segment). When the request arrives in one receive batch and a stream
echo answers it on its next turn, the stack sends the reply, carrying the ACK, instead of
a pure ACK and then the reply. Over the in-memory wire, adaptive mode mostly reads the
three segments of a request in one round.
"""

from __future__ import annotations

import asyncio

from anp_async.stack import Stack
from tests.stackutil import wire_stacks

REQUESTS = 40
SIZE = 3 * 1448  # three full segments (MSS 1460 less the 12-byte timestamp option)


async def _echo_rounds(a: Stack, b: Stack, port: int) -> dict[str, int]:
    """``REQUESTS`` request/reply rounds of ``SIZE`` bytes; the server's TCP counters."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
        writer.close()

    server = await b.start_server(echo, "10.0.0.2", port)
    reader, writer = await a.open_connection("10.0.0.2", port)
    for i in range(REQUESTS):
        req = bytes([i]) * SIZE
        writer.write(req)
        assert await reader.readexactly(SIZE) == req
    counters = dict(b.stats()["tcp"])
    writer.close()
    await writer.wait_closed()
    server.close()
    return counters


async def test_reply_carries_the_ack_the_request_owes() -> None:
    async with wire_stacks("adaptive") as (a, b):
        c = await asyncio.wait_for(_echo_rounds(a, b, 9100), 60)
    assert c["conn_segments_out"] >= 3 * REQUESTS  # every reply went out
    # Without the deferral every request costs the server a pure ACK (40 of 40 seen);
    # with it, only a request split across two batches does (3 to 10 of 40 seen).
    assert c["conn_pure_acks_sent"] <= REQUESTS // 2, c["conn_pure_acks_sent"]
