"""Synchronized states: RST, SYN and ACK checks (RFC 9293 3.10.7.4, RFC 5961), acceptability."""

from __future__ import annotations

import asyncio

from tests.conformance.conftest import Recorder
from tests.conformance.harness import (
    TCP,
    Target,
    check_alive,
    established,
    flags_of,
    seq_add,
    summary,
    tcp_options,
)


def _challenge(flow, p) -> bool:  # type: ignore[no-untyped-def]
    """A pure ACK carrying the target's RCV.NXT = our SND.NXT (a challenge ACK)."""
    return flags_of(p) == "A" and p[TCP].ack == flow.snd_nxt


async def test_rfc5961_3_2_rst_exact_seq_resets(target: Target, record: Recorder) -> None:
    """RFC 5961 3.2 / RFC 9293 3.10.7.4: RST with SEQ = RCV.NXT resets the connection."""
    flow, conn, _ = await established(target, 7001)
    flow.send("RA", advance=False)
    err = await conn.wait_error(2.0)
    record(f"application sees {type(err).__name__}")
    assert isinstance(err, ConnectionResetError)
    await flow.expect_none(within=0.2)


async def test_rfc5961_3_2_rst_in_window_gets_challenge_ack(
    target: Target, record: Recorder
) -> None:
    """RFC 5961 3.2: RST in the window but not at RCV.NXT -> challenge ACK, no reset."""
    flow, conn, _ = await established(target, 7002)
    flow.send("RA", seq=seq_add(flow.snd_nxt, 100))
    ack = await flow.expect(lambda p: "A" in flags_of(p), what="challenge ACK")
    record("challenge ACK " + summary(ack))
    assert _challenge(flow, ack) and ack[TCP].seq == flow.rcv_nxt
    assert conn.error is None
    await check_alive(flow, conn)


async def test_rfc5961_3_2_rst_out_of_window_ignored(target: Target, record: Recorder) -> None:
    """RFC 5961 3.2 / RFC 9293 3.10.7.4: RST outside the window is silently dropped."""
    flow, conn, _ = await established(target, 7003)
    flow.send("RA", seq=seq_add(flow.snd_nxt, 1 << 30))
    flow.send("RA", seq=seq_add(flow.snd_nxt, -100000))
    await flow.expect_none(within=0.4)
    assert conn.error is None
    await check_alive(flow, conn)
    record("nothing sent, connection alive")


async def test_rfc5961_4_2_syn_in_established_gets_challenge_ack(
    target: Target, record: Recorder
) -> None:
    """RFC 5961 4.2 / RFC 9293 3.10.7.4 fourth: any SYN in ESTABLISHED -> challenge ACK."""
    flow, conn, _ = await established(target, 7004)
    flow.send("S", seq=seq_add(flow.snd_nxt, 10), advance=False, options=[("MSS", 1460)])
    ack = await flow.expect(lambda p: "A" in flags_of(p) or "R" in flags_of(p))
    record("challenge ACK " + summary(ack))
    assert _challenge(flow, ack)
    await asyncio.sleep(0.1)
    assert conn.error is None
    await check_alive(flow, conn)


async def test_rfc9293_3_10_7_4_ack_of_unsent_data(target: Target, record: Recorder) -> None:
    """RFC 9293 3.10.7.4 fifth / RFC 5961 5.2: SEG.ACK > SND.NXT -> send ACK, drop segment."""
    flow, conn, _ = await established(target, 7005)
    flow.send("PA", payload=b"BAD", ack=seq_add(flow.rcv_nxt, 5000), advance=False)
    ack = await flow.expect(lambda p: "A" in flags_of(p), what="ACK")
    assert _challenge(flow, ack)
    record("ACK sent, segment dropped: " + summary(ack))
    await asyncio.sleep(0.1)
    assert bytes(conn.data) == b""
    await check_alive(flow, conn)


async def test_rfc5961_5_2_too_old_ack_dropped(target: Target, record: Recorder) -> None:
    """RFC 5961 5.2: SEG.ACK < SND.UNA - MAX.SND.WND -> drop the segment and send an ACK."""
    flow, conn, _ = await established(target, 7006)
    flow.send("PA", payload=b"OLD", ack=seq_add(flow.rcv_nxt, -200000), advance=False)
    ack = await flow.expect(lambda p: "A" in flags_of(p), what="ACK")
    record("ACK sent, segment dropped: " + summary(ack))
    assert _challenge(flow, ack)
    await asyncio.sleep(0.1)
    assert bytes(conn.data) == b""
    await check_alive(flow, conn)


async def test_rfc9293_3_10_7_4_data_beyond_window_acked_dropped(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.10.7.4 first: unacceptable segment (beyond window) -> ACK, dropped."""
    flow, conn, _ = await established(target, 7007)
    flow.send("PA", payload=b"FAR", seq=seq_add(flow.snd_nxt, 1 << 30))
    ack = await flow.expect(lambda p: "A" in flags_of(p), what="ACK")
    record("ACK " + summary(ack))
    assert _challenge(flow, ack)
    await asyncio.sleep(0.1)
    assert bytes(conn.data) == b""
    await check_alive(flow, conn)


async def test_rfc9293_3_10_7_4_old_duplicate_data_acked(target: Target, record: Recorder) -> None:
    """RFC 9293 3.10.7.4 first: a duplicate of delivered data -> ACK of RCV.NXT, not redelivered."""
    flow, conn, _ = await established(target, 7008)
    start = flow.snd_nxt
    flow.send("PA", payload=b"0123456789")
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK")
    flow.send("PA", payload=b"0123456789", seq=start)
    ack = await flow.expect(lambda p: "A" in flags_of(p), what="ACK of the duplicate")
    record("duplicate ACKed: " + summary(ack))
    assert ack[TCP].ack == flow.snd_nxt
    await asyncio.sleep(0.1)
    assert bytes(conn.data) == b"0123456789"


async def test_rfc2018_rfc5681_4_2_out_of_order_dup_ack_with_sack(
    target: Target, record: Recorder
) -> None:
    """RFC 5681 4.2, RFC 2018 4: out-of-order data -> immediate dup ACK with a SACK block;
    the data is delivered in order once the hole is filled (RFC 9293 3.10.7.4 seventh)."""
    flow, conn, _ = await established(target, 7009)
    base = flow.snd_nxt
    flow.send("PA", payload=b"B" * 100, seq=seq_add(base, 100))
    dup = await flow.expect(lambda p: "A" in flags_of(p), what="duplicate ACK")
    sack = tcp_options(dup).get("SAck")
    record("dup ACK " + summary(dup))
    assert dup[TCP].ack == base
    assert sack is not None and tuple(sack[:2]) == (seq_add(base, 100), seq_add(base, 200))
    assert bytes(conn.data) == b""
    flow.send("PA", payload=b"A" * 100, seq=base)
    flow.snd_nxt = seq_add(base, 200)
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="cumulative ACK")
    assert await conn.wait_data(200) == b"A" * 100 + b"B" * 100


async def test_rfc5681_4_2_out_of_order_dup_ack_without_sack(
    target: Target, record: Recorder
) -> None:
    """RFC 5681 4.2 / RFC 2018 2: no SACK-permitted in the SYN -> dup ACK without SACK option."""
    flow, conn, _ = await established(
        target, 7010, options=[("MSS", 1460), ("NOP", None), ("WScale", 0)]
    )
    base = flow.snd_nxt
    flow.send("PA", payload=b"B" * 100, seq=seq_add(base, 100))
    dup = await flow.expect(lambda p: "A" in flags_of(p), what="duplicate ACK")
    record("dup ACK " + summary(dup))
    assert dup[TCP].ack == base and "SAck" not in tcp_options(dup)
    flow.send("PA", payload=b"A" * 100, seq=base)
    flow.snd_nxt = seq_add(base, 200)
    assert await conn.wait_data(200) == b"A" * 100 + b"B" * 100


async def test_rfc9293_3_10_7_4_overlapping_segments_delivered_once(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.10.7.4 / 3.4: overlapping and out-of-order segments -> each byte once, in order."""
    flow, conn, _ = await established(target, 7011)
    base = flow.snd_nxt
    data = bytes(range(256)) + bytes(range(44))  # 300 bytes
    for lo, hi in ((0, 100), (50, 150), (200, 300), (100, 250), (0, 300)):
        flow.send("PA", payload=data[lo:hi], seq=seq_add(base, lo))
    flow.snd_nxt = seq_add(base, 300)
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of all 300 bytes")
    got = await conn.wait_data(300)
    await asyncio.sleep(0.1)
    record(f"{len(conn.data)} bytes delivered")
    assert got == data and bytes(conn.data) == data
