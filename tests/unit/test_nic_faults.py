"""The seeded fault injector: reproducible, within statistical bounds, bounded queues."""

from __future__ import annotations

import asyncio

import pytest

from anp_async.nic.faults import ETH_HEADER_LEN, FaultConfig, FaultyNic
from anp_async.nic.wire import Wire, WireNic

ETH = b"\xaa" * 6 + b"\xbb" * 6 + b"\x08\x00"


def frame(i: int, size: int = 64) -> bytes:
    body = i.to_bytes(4, "big")
    return ETH + body + bytes(size - ETH_HEADER_LEN - len(body))


def seq(f: bytes) -> int:
    return int.from_bytes(f[ETH_HEADER_LEN : ETH_HEADER_LEN + 4], "big")


def drain(nic: WireNic) -> list[bytes]:
    out: list[bytes] = []
    while batch := nic.recv_batch(512):
        out.extend(batch)
    return out


def run_tx(cfg: FaultConfig, n: int) -> tuple[list[bytes], dict[str, int]]:
    """Send n frames through a FaultyNic (no timers involved), return what arrived."""
    a, b = Wire.pair()
    fa = FaultyNic(a, cfg)
    got: list[bytes] = []
    for i in range(n):
        fa.send([frame(i)])
        if i % 500 == 499:
            got.extend(drain(b))
    got.extend(drain(b))
    fa.close()
    b.close()
    return got, dict(fa.fault_stats)


def test_no_faults_is_transparent() -> None:
    got, fs = run_tx(FaultConfig(), 100)
    assert got == [frame(i) for i in range(100)]
    assert all(v == 0 for v in fs.values())


def test_loss_is_reproducible_and_within_bounds() -> None:
    n = 5000
    got1, fs1 = run_tx(FaultConfig(loss=0.2, seed=42), n)
    got2, fs2 = run_tx(FaultConfig(loss=0.2, seed=42), n)
    got3, _ = run_tx(FaultConfig(loss=0.2, seed=43), n)
    assert got1 == got2 and fs1 == fs2  # same seed, same faults
    assert got1 != got3
    # Binomial(5000, 0.2): mean 1000, sd ~28; +-5 sd.
    assert 860 <= fs1["dropped"] <= 1140
    assert len(got1) == n - fs1["dropped"]
    seqs = [seq(f) for f in got1]
    assert seqs == sorted(seqs)  # loss alone never reorders


def test_duplicate_adds_exact_copies() -> None:
    n = 2000
    got, fs = run_tx(FaultConfig(duplicate=0.1, seed=7), n)
    assert 130 <= fs["duplicated"] <= 270  # Binomial(2000, 0.1): mean 200, sd ~13
    assert len(got) == n + fs["duplicated"]
    seqs = [seq(f) for f in got]
    assert sorted(set(seqs)) == list(range(n))
    assert seqs == sorted(seqs)  # duplicates follow their original


def test_corruption_flips_one_byte_past_the_ethernet_header() -> None:
    n = 1000
    got, fs = run_tx(FaultConfig(corrupt=0.05, seed=3), n)
    assert len(got) == n
    damaged = 0
    for i, f in enumerate(got):
        want = frame(i)
        assert len(f) == len(want)
        assert f[:ETH_HEADER_LEN] == want[:ETH_HEADER_LEN]
        diff = [j for j in range(len(f)) if f[j] != want[j]]
        assert len(diff) <= 1
        damaged += bool(diff)
    assert damaged == fs["corrupted"]
    assert 20 <= damaged <= 85  # Binomial(1000, 0.05): mean 50, sd ~7


def test_direction_rx_leaves_tx_alone() -> None:
    got, fs = run_tx(FaultConfig(loss=1.0, direction="rx"), 50)
    assert len(got) == 50 and fs["dropped"] == 0


def test_scatter_gather_parts_pass_through() -> None:
    a, b = Wire.pair()
    fa = FaultyNic(a, FaultConfig(corrupt=1.0, seed=1))
    body = bytearray(range(100))
    fa.send([ETH, memoryview(body)[:50]])
    (f,) = b.recv_batch()
    assert len(f) == 64 and f[:14] == ETH
    assert sum(x != y for x, y in zip(f[14:], body[:50], strict=True)) == 1
    fa.close()
    b.close()


async def test_tx_reorder_holds_frames_then_delivers_all() -> None:
    a, b = Wire.pair()
    fa = FaultyNic(a, FaultConfig(reorder=0.25, reorder_delay=0.01, seed=5))
    n = 200
    for i in range(n):
        fa.send([frame(i)])
    early = drain(b)
    await asyncio.sleep(0.05)
    late = drain(b)
    got = [seq(f) for f in early + late]
    assert sorted(got) == list(range(n))  # every frame exactly once
    assert got != list(range(n))  # but not in order
    assert len(late) == fa.fault_stats["reordered"] > 20
    assert fa.pending_timers == 0
    fa.close()
    b.close()


async def test_delay_and_jitter_are_deferred_not_lost() -> None:
    loop = asyncio.get_running_loop()
    a, b = Wire.pair()
    fa = FaultyNic(a, FaultConfig(delay=0.02, jitter=0.01, seed=9), loop=loop)
    start = loop.time()
    for i in range(20):
        fa.send([frame(i)])
    assert b.recv_batch() == []  # nothing can arrive before delay - jitter
    assert fa.fault_stats["delayed"] == 20
    got: list[bytes] = []
    while len(got) < 20 and loop.time() - start < 2:
        await asyncio.sleep(0.005)
        got.extend(drain(b))
    assert sorted(seq(f) for f in got) == list(range(20))
    fa.close()
    b.close()


async def test_rate_limit_queue_is_bounded_and_drains() -> None:
    a, b = Wire.pair()
    # 8 Mbit/s = 1 byte/us: a 1000-byte frame every ms; bucket = one frame.
    fa = FaultyNic(a, FaultConfig(rate_bps=8e6, queue_limit=10, rate_burst=1000))
    for i in range(100):
        fa.send([frame(i, 1000)])
    assert fa.rate_queue_len == 10
    assert fa.fault_stats["rate_dropped"] == 89
    assert [seq(f) for f in b.recv_batch()] == [0]  # the bucket held exactly one frame
    got: list[int] = [0]
    loop = asyncio.get_running_loop()
    start = loop.time()
    while len(got) < 11 and loop.time() - start < 2:
        await asyncio.sleep(0.005)
        got.extend(seq(f) for f in drain(b))
    assert got == list(range(11))  # the queue drains in order
    assert fa.rate_queue_len == 0
    fa.close()
    b.close()


async def test_close_cancels_pending_timers() -> None:
    a, b = Wire.pair()
    fa = FaultyNic(a, FaultConfig(delay=0.02, rate_bps=8e6, rate_burst=100, queue_limit=5))
    for i in range(5):
        fa.send([frame(i, 1000)])
    assert fa.pending_timers > 0
    fa.close()
    assert fa.pending_timers == 0 and fa.rate_queue_len == 0
    await asyncio.sleep(0.05)
    assert b.recv_batch() == []
    b.close()


def rx_run(cfg: FaultConfig, n: int, batch: int = 32) -> tuple[list[bytes], FaultyNic]:
    a, b = Wire.pair()
    fb = FaultyNic(b, cfg)
    got: list[bytes] = []
    for start in range(0, n, batch):
        for i in range(start, min(n, start + batch)):
            a.send([frame(i)])
        got.extend(fb.recv_batch(batch))
        assert fb.recv_batch(batch) == []  # nothing is held back between batches
    a.close()
    fb.close()
    return got, fb


def test_rx_faults_are_reproducible() -> None:
    cfg = FaultConfig(loss=0.1, duplicate=0.05, reorder=0.1, corrupt=0.02, seed=11)
    got1, f1 = rx_run(cfg, 2000)
    got2, f2 = rx_run(
        FaultConfig(loss=0.1, duplicate=0.05, reorder=0.1, corrupt=0.02, seed=11), 2000
    )
    assert got1 == got2 and f1.fault_stats == f2.fault_stats
    fs = f1.fault_stats
    assert len(got1) == 2000 - fs["dropped"] + fs["duplicated"]
    for key in ("dropped", "duplicated", "reordered", "corrupted"):
        assert fs[key] > 0, key
    assert fs["delayed"] == fs["rate_dropped"] == 0


def test_rx_reorder_swaps_within_the_batch_and_loses_nothing() -> None:
    got, fb = rx_run(FaultConfig(reorder=0.3, seed=2), 640)
    seqs = [seq(f) for f in got]
    assert sorted(seqs) == list(range(640))
    assert seqs != list(range(640))
    inversions = sum(1 for x, y in zip(seqs, seqs[1:], strict=False) if x > y)
    assert inversions == fb.fault_stats["reordered"]
    # A held frame is overtaken by exactly one frame: it never moves more than one slot.
    assert all(abs(s - i) <= 1 for i, s in enumerate(seqs))


def test_rx_single_frame_batches_are_never_stuck() -> None:
    got, fb = rx_run(FaultConfig(reorder=1.0, seed=1), 50, batch=1)
    assert [seq(f) for f in got] == list(range(50))
    assert fb.fault_stats["reordered"] == 0


def test_delegation() -> None:
    a, b = Wire.pair(mtu=4000)
    fa = FaultyNic(a, FaultConfig(loss=0.5, seed=1))
    assert fa.fileno() == a.fileno()
    assert fa.mtu == 4000
    for i in range(100):
        fa.send([frame(i)])
    assert fa.stats is a.stats
    assert a.stats.tx_frames == 100 - fa.fault_stats["dropped"]
    fa.close()
    assert a.closed
    b.close()


@pytest.mark.parametrize(
    "kwargs",
    [{"loss": 1.5}, {"reorder": -0.1}, {"delay": -1}, {"rate_bps": 0}, {"direction": "up"}],
)
def test_config_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultConfig(**kwargs)  # type: ignore[arg-type]


class _Clock:
    """A stand-in loop: FaultyNic only asks a link flap for ``time()``."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now


def test_link_flap_drops_exactly_the_down_intervals() -> None:
    a, b = Wire.pair()
    clock = _Clock()
    fa = FaultyNic(a, FaultConfig(flap_every=1.0, flap_down=0.25), loop=clock)  # type: ignore[arg-type]
    sent_at = [i * 0.05 for i in range(60)]  # 3 s of traffic, a frame every 50 ms
    for i, t in enumerate(sent_at):
        clock.now = t
        fa.send([frame(i)])
    got = [seq(f) for f in drain(b)]
    # Down for t mod 1 in [0.75, 1): 5 of every 20 frames.
    assert got == [i for i, t in enumerate(sent_at) if round(t % 1.0, 9) < 0.75]
    assert fa.fault_stats["flap_dropped"] == 15
    fa.close()
    b.close()


def test_link_flap_config_is_validated() -> None:
    with pytest.raises(ValueError, match="flap_down"):
        FaultConfig(flap_every=1.0, flap_down=2.0)


def test_rate_limiter_drains_when_the_clock_reads_large_values() -> None:
    """anp sim (seed 21, faults=rate): with loop.time() near 2.6e6 s a wait for the last
    fraction of a byte of tokens is below the clock's float resolution, so the timer fired
    at the same time again and again without refilling the bucket: a busy loop."""
    from anp_async.sim.loop import SimEventLoop

    loop = SimEventLoop(start=2638147.071811991, max_steps=20_000)
    a, b = Wire.pair()
    fa = FaultyNic(a, FaultConfig(rate_bps=1e7, queue_limit=500), loop=loop)

    async def main() -> None:
        for i in range(300):
            fa.send([frame(i, 1000 + i % 7)])
            await asyncio.sleep(0.0001 * (i % 3))
        while fa.rate_queue_len:
            await asyncio.sleep(0.001)

    try:
        loop.run_until_complete(main())  # SimStalled (too many steps) before the fix
        assert [seq(f) for f in drain(b)] == list(range(300))
    finally:
        fa.close()
        b.close()
        loop.close()


def test_constant_delay_keeps_frames_sent_at_the_same_time_in_order() -> None:
    """anp sim (seed 356, clean wire with 10 ms delay): frames sent at the same loop time
    came out in another order, because asyncio's timer heap does not keep equal times in
    order. A constant delay must not reorder (netem's does not)."""
    from anp_async.sim.loop import SimEventLoop

    loop = SimEventLoop(start=1.0)
    a, b = Wire.pair()
    fa = FaultyNic(a, FaultConfig(delay=0.01), loop=loop)

    async def main() -> None:
        for burst in range(5):
            for i in range(20):
                fa.send([frame(burst * 20 + i)])  # 20 frames at one instant
            await asyncio.sleep(0.003)
        await asyncio.sleep(0.02)

    try:
        loop.run_until_complete(main())
        assert [seq(f) for f in drain(b)] == list(range(100))
        assert fa.pending_timers == 0
    finally:
        fa.close()
        b.close()
        loop.close()


def test_corruption_spares_arp_frames() -> None:
    """ARP has no checksum of its own: a corrupted ARP reply taught the other stack a wrong
    MAC for a minute (anp sim, seeds 890/1000054), which no link with an FCS does."""
    arp = b"\xff" * 6 + b"\xbb" * 6 + b"\x08\x06" + bytes(range(28))
    a, b = Wire.pair()
    fa = FaultyNic(a, FaultConfig(corrupt=1.0, seed=3))
    fa.send([arp[:14], arp[14:]])
    fa.send([frame(1)])
    out = drain(b)
    assert out[0] == arp and out[1] != frame(1)
    assert fa.fault_stats["corrupted"] == 1
    fa.close()
    b.close()


def test_ce_marking_sets_ce_on_ect_ipv4_only_with_a_valid_checksum() -> None:
    from anp_async.proto.ipv4 import build_ipv4_header, parse_ipv4_header

    def ip_frame(tos: int) -> bytes:
        src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
        return ETH + build_ipv4_header(src, dst, 6, 20, 7, tos=tos) + bytes(20)

    a, b = Wire.pair()
    fa = FaultyNic(a, FaultConfig(ce_mark=1.0))
    for tos in (0x00, 0x02, 0x01, 0x03, 0xB8 | 0x02):
        fa.send([ip_frame(tos)])
    fa.send([frame(1)])  # not IP-shaped enough: untouched
    got = drain(b)
    tos_out = [parse_ipv4_header(memoryview(f)[ETH_HEADER_LEN:]).tos for f in got[:5]]
    # RFC 3168 (5): Not-ECT passes, ECT(0)/ECT(1) become CE, DSCP bits are kept;
    # parse_ipv4 verifies the header checksum (RFC 1624 incremental update).
    assert tos_out == [0x00, 0x03, 0x03, 0x03, 0xBB]
    assert got[5] == frame(1)
    assert fa.fault_stats["ce_marked"] == 3
    fa.close()
    b.close()


def test_ce_marking_sets_ce_in_the_ipv6_traffic_class() -> None:
    from anp_async.proto.ipv6 import build_ipv6_header, parse_ipv6_header

    eth6 = ETH[:12] + b"\x86\xdd"

    def ip6_frame(tclass: int) -> bytes:
        src, dst = bytes.fromhex("fd00" + "00" * 13 + "01"), bytes.fromhex("fd00" + "00" * 13 + "02")
        return eth6 + build_ipv6_header(src, dst, 6, 20, traffic_class=tclass) + bytes(20)

    a, b = Wire.pair()
    fa = FaultyNic(a, FaultConfig(ce_mark=1.0))
    for tclass in (0x00, 0x02, 0x01, 0x03, 0xB8 | 0x02):
        fa.send([ip6_frame(tclass)])
    got = drain(b)
    out = [parse_ipv6_header(memoryview(f)[ETH_HEADER_LEN:]).traffic_class for f in got]
    # RFC 3168 (5): Not-ECT passes, ECT(0)/ECT(1) become CE, the DSCP bits are kept.
    assert out == [0x00, 0x03, 0x03, 0x03, 0xBB]
    assert fa.fault_stats["ce_marked"] == 3
    fa.close()
    b.close()
