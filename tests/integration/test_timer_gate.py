"""A TCP timer that comes due while frames wait unread is held until they are read
(``modes/timergate.py``): the ACK waiting in the queue makes the retransmission moot.

Two stacks on the in-memory wire, A in interrupt mode (one frame per loop pass). A's
queue is made to hold a hundred frames for another host and, behind them, B's ACK of
A's last data; then the loop is blocked past A's retransmission timeout, as a backlogged
stack is. Without the gate the first pass after the block reads one frame and then fires
A's timer, which retransmits data that is already acknowledged.
"""

from __future__ import annotations

import asyncio
import time

from anp_async.proto.ethernet import build_ethernet_header, mac_to_bytes
from anp_async.proto.numbers import ETH_P_IP
from anp_async.stack import Stack
from tests.stackutil import wire_stacks

#: Frames queued ahead of the ACK (the socketpair holds ~270 frames this small).
JUNK = 100
PORT = 9300


def _frame_for_another_host(src: Stack) -> bytes:
    other = mac_to_bytes("02:00:00:00:00:99")
    return build_ethernet_header(other, mac_to_bytes(src.mac), ETH_P_IP) + bytes(46)


async def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


async def test_a_timer_due_behind_queued_frames_waits_for_them() -> None:
    async with wire_stacks("interrupt", mode_b="adaptive") as (a, b):
        got = bytearray()

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(1 << 16):
                got.extend(data)
            writer.close()

        server = await b.start_server(sink, "10.0.0.2", PORT)
        _reader, writer = await a.open_connection("10.0.0.2", PORT)
        for i in range(1, 6):  # RTT samples: the RTO settles at rto_min
            writer.write(b"x" * 100)
            await _until(lambda i=i: len(got) == 100 * i)
            await asyncio.sleep(0.01)
        before = dict(a.stats()["tcp"])
        junk = _frame_for_another_host(b)
        for _ in range(JUNK):
            b.nic.send([junk])
        writer.write(b"y" * 1000)  # out now; B's ACK queues behind the junk at A
        await _until(lambda: len(got) == 1500)
        time.sleep(0.4)  # the loop is blocked past A's RTO (rto_min 0.05 s) and its TLP
        await _until(lambda: a.stats()["eth"].get("not_for_us", 0) >= JUNK)
        await asyncio.sleep(0.3)
        after = a.stats()["tcp"]
        writer.close()
        server.close()
    for name in ("conn_retransmits", "conn_timeouts", "conn_tlp_probes"):
        assert after.get(name, 0) == before.get(name, 0), (name, before, after)
    assert after["timers_held"] > before.get("timers_held", 0)
    assert bytes(got) == b"x" * 500 + b"y" * 1000
