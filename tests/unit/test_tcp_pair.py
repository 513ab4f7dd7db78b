"""Two TcpConnection engines joined by the simulated link of tcp_harness: whole lives."""

from __future__ import annotations

import hashlib
import random

import pytest

from anp_async.proto.tcp import TcpConfig, TcpState
from tests.unit.tcp_harness import TcpPair


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def transfer_and_close(p: TcpPair, da: bytes, db: bytes, max_time: float = 600.0) -> None:
    assert p.run(lambda: p.a.connected and p.b.connected, max_time=60.0)
    p.a.to_send = memoryview(da)
    p.b.to_send = memoryview(db)
    p.a.shutdown_when_sent = True
    p.b.shutdown_when_sent = True
    assert p.run(lambda: p.a.closed is not None and p.b.closed is not None, max_time=max_time)
    assert (p.a.closed, p.b.closed) == ("normal", "normal")
    assert p.a.eof and p.b.eof
    assert hashlib.sha256(p.b.received).digest() == hashlib.sha256(da).digest()
    assert hashlib.sha256(p.a.received).digest() == hashlib.sha256(db).digest()
    # TIME_WAIT ends and both TCBs reach CLOSED.
    assert p.run(
        lambda: p.a.conn.state is TcpState.CLOSED and p.b.conn.state is TcpState.CLOSED,
        max_time=1000.0,
    )


def test_one_megabyte_both_ways_over_the_wire_format() -> None:
    p = TcpPair(wire=True, cfg_a=TcpConfig(msl=1.0), cfg_b=TcpConfig(msl=1.0))
    transfer_and_close(p, blob(1 << 20, 1), blob(1 << 20, 2))
    a = p.a.conn
    assert a.counters["retransmits"] == 0
    assert a.bytes_acked == 1 << 20
    assert a.ts_ok and a.sack_ok and a.snd_wscale == 3


def test_bulk_one_way_with_bandwidth_limit() -> None:
    cfg = TcpConfig(msl=1.0, recv_buffer=64 * 1024)
    p = TcpPair(cfg, cfg, delay=0.01, bandwidth=10e6)
    transfer_and_close(p, blob(500_000, 3), b"")
    # 500 kB at 10 MB/s needs >= 50 ms; a window of 64 KiB per 20 ms RTT allows ~3.2 MB/s.
    assert p.now > 0.1


@pytest.mark.parametrize(
    ("seed", "loss", "cc", "sack", "ts"),
    [
        (1, 0.01, "newreno", True, True),
        (2, 0.03, "cubic", False, True),
        (3, 0.05, "newreno", True, False),
        (4, 0.10, "cubic", False, False),
    ],
)
def test_lossy_link_delivers_everything_once(seed, loss, cc, sack, ts) -> None:
    rnd = random.Random(seed)

    def drop(direction, seg, idx) -> bool:
        return rnd.random() < loss

    cfg = TcpConfig(
        rto_min=0.05, msl=30.0, congestion=cc, sack=sack, timestamps=ts, recv_buffer=128 * 1024
    )
    p = TcpPair(cfg, cfg, delay=0.005, drop=drop, wire=True, bandwidth=50e6)
    da = blob(200_000, seed)
    db = blob(120_000, seed + 100)
    assert p.run(lambda: p.a.connected and p.b.connected, max_time=60.0)
    p.a.to_send = memoryview(da)
    p.b.to_send = memoryview(db)
    p.a.shutdown_when_sent = True
    p.b.shutdown_when_sent = True
    assert p.run(lambda: p.a.closed is not None and p.b.closed is not None, max_time=600.0)
    assert bytes(p.b.received) == da
    assert bytes(p.a.received) == db
    assert p.a.eof and p.b.eof
    assert p.a.conn.counters["retransmits"] + p.b.conn.counters["retransmits"] > 0


def test_reordering_and_duplication() -> None:
    """Every fourth segment is delayed behind later ones and every fifth duplicated."""
    p = TcpPair(TcpConfig(msl=1.0), TcpConfig(msl=1.0), delay=0.005)
    orig = p._transmit

    def transmit(direction, segs):
        out = []
        for i, s in enumerate(segs):
            out.append(s)
            if i % 5 == 4:
                out.append(s)
        if len(out) > 4:
            out[1], out[3] = out[3], out[1]
        orig(direction, out)

    p._transmit = transmit
    transfer_and_close(p, blob(300_000, 7), blob(50_000, 8))
    assert p.b.conn.counters["ooo_segments"] > 0 or p.b.conn.counters["dup_segments"] > 0


def test_slow_reader_zero_window_then_drain() -> None:
    cfg_b = TcpConfig(recv_buffer=16 * 1024, msl=1.0)
    p = TcpPair(TcpConfig(msl=1.0), cfg_b, delay=0.002)
    assert p.run(lambda: p.a.connected and p.b.connected)
    p.b.auto_read = False
    data = blob(100_000, 9)
    p.a.to_send = memoryview(data)
    p.run(lambda: False, max_time=5.0)
    b = p.b.conn
    assert b.recv_available == 16 * 1024  # buffer full, window closed
    assert p.a.conn.snd_wnd == 0
    assert p.a.conn.counters["zero_window_probes"] > 0
    got = bytearray()
    total = len(data)
    while len(got) < total:
        got += b.recv()
        done = len(got) == total
        assert p.run(lambda done=done: b.recv_available > 0 or done, max_time=30.0)
    assert bytes(got) == data
    assert p.a.conn.state is TcpState.ESTABLISHED


def test_syn_lost_then_connects() -> None:
    def drop(direction, seg, idx) -> bool:
        return direction == "ab" and idx == 0

    p = TcpPair(drop=drop)
    assert p.run(lambda: p.a.connected and p.b.connected)
    assert p.now >= 1.0  # after the initial RTO
    assert p.a.conn.counters["retransmits"] == 1


@pytest.mark.parametrize("seed", range(24))
def test_randomized_impairments_and_configs(seed: int) -> None:
    """Random loss, duplication, swaps, buffer sizes, MSS and options: bytes arrive intact."""
    rnd = random.Random(seed)
    loss = rnd.choice([0.0, 0.01, 0.05, 0.15])
    dup = rnd.choice([0.0, 0.05])

    def cfg() -> TcpConfig:
        return TcpConfig(
            rto_min=0.05,
            msl=30.0,
            congestion=rnd.choice(["newreno", "cubic"]),
            sack=rnd.random() < 0.5,
            timestamps=rnd.random() < 0.5,
            window_scale=rnd.random() < 0.7,
            nodelay=rnd.random() < 0.5,
            recv_buffer=rnd.choice([2048, 8192, 65536, 300000]),
            send_buffer=rnd.choice([4096, 65536, 300000]),
            mss=rnd.choice([536, 1000, 1460, 9000]),
            delayed_ack=rnd.choice([0.0, 0.04]),
            max_ooo_segments=rnd.choice([4, 256]),
        )

    p = TcpPair(
        cfg(),
        cfg(),
        delay=rnd.choice([0.0005, 0.005, 0.05]),
        wire=True,
        drop=lambda d, s, i: rnd.random() < loss,
        bandwidth=rnd.choice([None, 1e6, 1e8]),
    )
    orig = p._transmit

    def transmit(direction, segs):
        out = []
        for s in segs:
            out.append(s)
            if rnd.random() < dup:
                out.append(s)
        if len(out) > 2 and rnd.random() < 0.3:
            i = rnd.randrange(len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
        orig(direction, out)

    p._transmit = transmit
    da = rnd.randbytes(rnd.randrange(0, 200_000))
    db = rnd.randbytes(rnd.randrange(0, 60_000))
    assert p.run(lambda: p.a.connected and p.b.connected, max_time=300)
    p.a.to_send = memoryview(da)
    p.b.to_send = memoryview(db)
    p.a.shutdown_when_sent = True
    p.b.shutdown_when_sent = True
    assert p.run(lambda: p.a.closed is not None and p.b.closed is not None, max_time=3000)
    assert (p.a.closed, p.b.closed) == ("normal", "normal")
    assert bytes(p.b.received) == da
    assert bytes(p.a.received) == db
