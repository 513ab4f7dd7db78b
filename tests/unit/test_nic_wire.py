"""The in-memory wire: frame boundaries, scatter-gather, batches, a bounded ring."""

from __future__ import annotations

import asyncio
import select

from anp_async.nic.wire import Wire, WireNic


def frame(i: int, size: int = 60) -> bytes:
    head = i.to_bytes(4, "big")
    return head + bytes([i % 256]) * (size - len(head))


def test_pair_delivers_frames_in_order_with_boundaries() -> None:
    a, b = Wire.pair()
    with a, b:
        sent = [frame(i, 60 + i) for i in range(10)]
        for f in sent:
            a.send([f])
        assert b.recv_batch(64) == sent
        assert b.recv_batch(64) == []
        assert a.stats.tx_frames == 10
        assert a.stats.tx_bytes == sum(map(len, sent))
        assert b.stats.rx_frames == 10
        assert b.stats.rx_bytes == a.stats.tx_bytes


def test_both_directions_are_independent() -> None:
    a, b = Wire.pair()
    with a, b:
        a.send([b"A" * 60])
        b.send([b"B" * 70])
        assert a.recv_batch() == [b"B" * 70]
        assert b.recv_batch() == [b"A" * 60]


def test_scatter_gather_parts_make_one_frame() -> None:
    a, b = Wire.pair()
    with a, b:
        payload = bytearray(range(200))
        parts = [b"\x01" * 14, bytearray(b"\x02" * 20), memoryview(payload)[10:110]]
        a.send(parts)
        (got,) = b.recv_batch()
        assert got == b"\x01" * 14 + b"\x02" * 20 + bytes(payload[10:110])
        assert a.stats.tx_bytes == 134


def test_recv_batch_respects_max_frames() -> None:
    a, b = Wire.pair()
    with a, b:
        for i in range(25):
            a.send([frame(i)])
        first = b.recv_batch(10)
        second = b.recv_batch(10)
        rest = b.recv_batch(10)
        assert [len(x) for x in (first, second, rest)] == [10, 10, 5]
        assert first + second + rest == [frame(i) for i in range(25)]
        assert b.recv_batch(1) == []


def test_fd_is_readable_exactly_when_a_frame_is_pending() -> None:
    a, b = Wire.pair()
    with a, b:
        assert select.select([b.fileno()], [], [], 0)[0] == []
        a.send([frame(1)])
        assert select.select([b.fileno()], [], [], 0)[0] == [b.fileno()]
        b.recv_batch()
        assert select.select([b.fileno()], [], [], 0)[0] == []


def test_jumbo_frame_is_not_truncated() -> None:
    a, b = Wire.pair(mtu=9000)
    with a, b:
        big = bytes(range(256)) * 35  # 8960 bytes
        a.send([big])
        assert b.recv_batch() == [big]
        assert a.mtu == b.mtu == 9000


def test_full_ring_drops_and_never_blocks() -> None:
    a, b = Wire.pair()
    with a, b:
        n = 20000
        for i in range(n):
            a.send([frame(i, 1514)])
        assert a.stats.tx_dropped > 0
        assert a.stats.tx_frames + a.stats.tx_dropped == n
        got: list[bytes] = []
        while batch := b.recv_batch(512):
            got.extend(batch)
        # What was accepted arrives, in order, and nothing else.
        assert len(got) == a.stats.tx_frames
        assert got[:3] == [frame(0, 1514), frame(1, 1514), frame(2, 1514)]


def test_empty_frame_is_refused() -> None:
    a, b = Wire.pair()
    with a, b:
        a.send([b"", b""])
        assert a.stats.tx_errors == 1
        assert b.recv_batch() == []
        assert b.link_up


def test_closed_peer_is_link_down() -> None:
    a, b = Wire.pair()
    b.close()
    with a:
        a.send([frame(1)])
        assert a.stats.tx_dropped == 1
        assert a.recv_batch() == []
        assert not a.link_up
        a.send([frame(2)])
        assert a.stats.tx_dropped == 2


def test_closed_nic_is_inert() -> None:
    a, b = Wire.pair()
    a.close()
    a.close()  # idempotent
    assert a.closed
    assert a.recv_batch() == []
    a.send([frame(1)])
    assert a.stats.tx_dropped == 1
    b.close()


async def test_add_reader_wakes_on_frames() -> None:
    loop = asyncio.get_running_loop()
    a, b = Wire.pair()
    received: list[bytes] = []
    done = asyncio.Event()

    def on_readable() -> None:
        received.extend(b.recv_batch(64))
        if len(received) >= 5:
            done.set()

    loop.add_reader(b.fileno(), on_readable)
    try:
        for i in range(5):
            a.send([frame(i)])
            await asyncio.sleep(0)
        await asyncio.wait_for(done.wait(), 2)
    finally:
        loop.remove_reader(b.fileno())
        a.close()
        b.close()
    assert received == [frame(i) for i in range(5)]


def test_wire_nic_is_a_nic() -> None:
    from anp_async.nic.base import Nic

    a, b = Wire.pair(names=("left", "right"))
    with a, b:
        assert isinstance(a, Nic) and isinstance(a, WireNic)
        assert a.name == "left" and b.name == "right"
        assert a.stats.as_dict()["tx_frames"] == 0
