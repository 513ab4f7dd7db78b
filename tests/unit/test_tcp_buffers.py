"""Send buffer, reassembly queue and ISN generator."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from anp_async.proto.tcp.isn import IsnGenerator
from anp_async.proto.tcp.reassembly import Reassembler
from anp_async.proto.tcp.sendbuf import SendBuffer


def test_sendbuf_bounded_and_views_without_copy() -> None:
    sb = SendBuffer(10_000)
    big = bytes(range(256)) * 32  # 8192 bytes, stored as is
    assert sb.append(big) == 8192
    assert sb.append(b"x" * 5000) == 1808
    assert sb.space == 0 and len(sb) == 10_000
    v = sb.view(100, 1000)
    assert isinstance(v, memoryview) and v.obj is big  # zero copy
    assert bytes(v) == big[100:1100]
    # A range across chunks is joined.
    assert bytes(sb.view(8000, 300)) == big[8000:] + b"x" * 108
    sb.ack(8192)
    assert len(sb) == 1808 and sb.space == 8192
    assert bytes(sb.view(0, 10)) == b"x" * 10


def test_sendbuf_small_writes_coalesce_and_survive_exported_views() -> None:
    sb = SendBuffer(1 << 20)
    sb.append(b"a" * 100)
    sb.append(b"b" * 100)
    v = sb.view(50, 100)  # exports the tail bytearray
    sb.append(b"c" * 100)  # cannot grow it now: starts a new chunk
    assert bytes(v) == b"a" * 50 + b"b" * 50
    assert bytes(sb.view(150, 100)) == b"b" * 50 + b"c" * 50
    del v
    sb.ack(300)
    assert len(sb) == 0
    sb.append(b"d")
    assert bytes(sb.view(0, 1)) == b"d"


def test_sendbuf_copies_mutable_input() -> None:
    sb = SendBuffer(100_000)
    data = bytearray(b"z" * 10_000)
    sb.append(data)
    data[:] = b"q" * 10_000
    assert bytes(sb.view(0, 5)) == b"zzzzz"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["w", "a"]), st.integers(1, 9000)), max_size=40))
def test_sendbuf_model(ops) -> None:
    sb = SendBuffer(50_000)
    model = bytearray()
    rnd = random.Random(len(ops))
    counter = 0
    for op, n in ops:
        if op == "w":
            data = bytes((counter + i) & 0xFF for i in range(n))
            counter += n
            k = sb.append(data)
            assert k == min(n, 50_000 - len(model))
            model += data[:k]
        else:
            k = min(n, len(model))
            sb.ack(k)
            del model[:k]
        assert len(sb) == len(model)
        if model:
            off = rnd.randrange(len(model))
            ln = rnd.randrange(len(model) - off + 1)
            assert bytes(sb.view(off, ln)) == bytes(model[off : off + ln])


def test_reassembly_in_order_delivery_and_overlaps() -> None:
    r = Reassembler(16)
    assert r.add(10, b"klmno", 0, 100)
    assert r.add(20, b"uvw", 0, 100)
    assert not r.add(11, b"lm", 0, 100)  # duplicate
    assert r.add(8, b"ijklmnopq", 0, 100)  # overlaps, extends both sides
    assert r.bytes == 9 + 3
    assert r.pop_ready(0) == []
    assert b"".join(bytes(x) for x in r.pop_ready(8)) == b"ijklmnopq"
    assert len(r) == 1
    # RFC 2883: the D-SACK block (the first part already held, 10..15) goes first, once.
    assert r.sack_blocks(4) == [(10, 15), (20, 23)]
    assert r.sack_blocks(4) == [(20, 23)]


def test_reassembly_respects_window_and_count() -> None:
    r = Reassembler(2)
    assert r.add(50, b"x" * 100, 0, 60)  # trimmed at the window edge
    assert r.bytes == 10
    assert r.add(10, b"y", 0, 60)
    assert not r.add(30, b"z", 0, 60)  # third range: full
    assert r.dropped == 1
    assert not r.add(100, b"w", 0, 60)  # beyond the window


def test_reassembly_sack_order_most_recent_first() -> None:
    r = Reassembler(16)
    r.add(100, b"a" * 10, 0, 1000)
    r.add(200, b"b" * 10, 0, 1000)
    r.add(300, b"c" * 10, 0, 1000)
    assert r.sack_blocks(4) == [(300, 310), (200, 210), (100, 110)]
    r.add(110, b"d" * 10, 0, 1000)  # extends the oldest block: now most recent
    assert r.sack_blocks(2) == [(100, 120), (300, 310)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 60)), max_size=30))
def test_reassembly_model(pieces) -> None:
    stream = bytes(random.Random(1).randbytes(400))
    r = Reassembler(1000)
    rcv_nxt = 0
    out = bytearray()
    for start, n in pieces:
        end = min(start + n, 400)
        if start >= end:
            continue
        if start <= rcv_nxt < end:
            out += stream[rcv_nxt:end]
            rcv_nxt = end
            for chunk in r.pop_ready(rcv_nxt):
                out += chunk
                rcv_nxt += len(chunk)
        else:
            r.add(start, stream[start:end], rcv_nxt, 400)
        assert bytes(out) == stream[: len(out)]
        # Held ranges never overlap and never reach below rcv_nxt.
        blocks = r.blocks()
        for (_a1, b1, _), (a2, _, _) in zip(blocks, blocks[1:], strict=False):
            assert b1 <= a2
        assert all(a > rcv_nxt for a, _, _ in blocks)


def test_isn_keyed_and_clocked() -> None:
    g = IsnGenerator(b"secret-1")
    a = g.isn(b"\x0a\x00\x00\x01", 1000, b"\x0a\x00\x00\x02", 80, 0.0)
    assert a == g.isn(b"\x0a\x00\x00\x01", 1000, b"\x0a\x00\x00\x02", 80, 0.0)
    # RFC 6528: M ticks every 4 us.
    assert g.isn(b"\x0a\x00\x00\x01", 1000, b"\x0a\x00\x00\x02", 80, 1.0) == (a + 250_000) % 2**32
    assert a != g.isn(b"\x0a\x00\x00\x01", 1001, b"\x0a\x00\x00\x02", 80, 0.0)
    assert a != IsnGenerator(b"secret-2").isn(
        b"\x0a\x00\x00\x01", 1000, b"\x0a\x00\x00\x02", 80, 0.0
    )
    assert 0 <= a < 2**32
