"""Closing: FIN retransmission, CLOSE-WAIT / LAST-ACK, half-close, simultaneous close,
TIME-WAIT (RFC 9293 3.6, 3.10.4, 3.10.7.4)."""

from __future__ import annotations

import asyncio

from tests.conformance.conftest import Recorder
from tests.conformance.harness import (
    TCP,
    Flow,
    Target,
    established,
    flags_of,
    payload_of,
    seq_add,
    summary,
)
from tests.conformance.targets import STACK_MSL


def _fin(p) -> bool:  # type: ignore[no-untyped-def]
    return "F" in flags_of(p)


async def _target_closes(flow: Flow, conn) -> tuple[int, object]:  # type: ignore[no-untyped-def]
    """The target's application closes; returns (sequence number of its FIN, the FIN)."""
    conn.close()
    fin = await flow.expect(_fin, what="FIN")
    return fin[TCP].seq + len(payload_of(fin)), fin


async def test_rfc9293_3_10_4_fin_retransmitted(target: Target, record: Recorder) -> None:
    """RFC 9293 3.10.4 / 3.8.1: an unacknowledged FIN is retransmitted (same sequence number)."""
    flow, conn, _ = await established(target, 9001)
    fin_seq, _ = await _target_closes(flow, conn)
    t0 = asyncio.get_running_loop().time()
    again = await flow.wire.expect(lambda p: flow.mine(p) and _fin(p), 3.0, "FIN again")
    dt = asyncio.get_running_loop().time() - t0
    record(f"FIN re-sent after {dt:.2f}s: {summary(again)}")
    assert again[TCP].seq + len(payload_of(again)) == fin_seq
    flow.send("A")
    flow.send("FA")
    last = await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of our FIN")
    assert flags_of(last) == "A"


async def test_rfc9293_3_10_7_4_close_wait_and_last_ack(target: Target, record: Recorder) -> None:
    """RFC 9293 3.10.7.4: FIN -> ACK, EOF to the app (CLOSE-WAIT); a repeated FIN is re-ACKed;
    close -> FIN (LAST-ACK); its ACK closes the connection (a later ACK meets RST)."""
    flow, conn, _ = await established(target, 9002)
    fin_seq = flow.snd_nxt
    flow.send("FA")
    ack = await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of FIN")
    assert await conn.wait_eof(2.0)
    flow.send("FA", seq=fin_seq)  # retransmitted FIN in CLOSE-WAIT
    again = await flow.expect(lambda p: "A" in flags_of(p), what="re-ACK")
    assert again[TCP].ack == flow.snd_nxt
    conn.close()
    fin = await flow.expect(_fin, what="FIN (LAST-ACK)")
    assert fin[TCP].ack == flow.snd_nxt
    flow.send("A")
    await asyncio.sleep(0.2)
    flow.send("A", payload=b"late")
    rst = await flow.expect(lambda p: "R" in flags_of(p), what="RST after CLOSED")
    record(f"FIN ACKed ({summary(ack)}), re-ACKed, FIN sent, then closed ({flags_of(rst)})")


async def test_rfc9293_3_6_half_close_target_sends_after_peer_fin(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.6 / 3.10.7.4 CLOSE-WAIT: after the peer's FIN the target may still send."""
    flow, conn, _ = await established(target, 9003)
    flow.send("FA")
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of FIN")
    assert await conn.wait_eof(2.0)
    conn.write(b"after-eof")
    got = await flow.collect_data(9)
    assert got == b"after-eof"
    conn.close()
    await flow.expect(_fin, what="FIN")
    flow.send("A")
    record("data sent in CLOSE-WAIT arrives, then FIN")


async def test_rfc9293_3_6_half_close_target_receives_after_own_fin(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.6 / 3.10.7.4 FIN-WAIT-2: after its own FIN the target still receives."""
    flow, conn, _ = await established(target, 9004)
    conn.shutdown_write()
    await flow.expect(_fin, what="FIN")
    flow.send("A")
    flow.send("PA", payload=b"more data")
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of data")
    assert await conn.wait_data(9) == b"more data"
    flow.send("FA")
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of FIN")
    assert await conn.wait_eof(2.0)
    record("data after the target's FIN delivered, then EOF")


async def test_rfc9293_3_10_7_4_time_wait_reacks_fin(target: Target, record: Recorder) -> None:
    """RFC 9293 3.10.7.4 TIME-WAIT: a retransmitted FIN is acknowledged again."""
    flow, conn, _ = await established(target, 9005)
    await _target_closes(flow, conn)
    flow.send("A")
    fin_seq = flow.snd_nxt
    flow.send("FA")
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of FIN")
    await asyncio.sleep(0.1)
    flow.send("FA", seq=fin_seq)
    again = await flow.expect(lambda p: "A" in flags_of(p), what="re-ACK in TIME-WAIT")
    record("retransmitted FIN re-ACKed: " + summary(again))
    assert flags_of(again) == "A" and again[TCP].ack == flow.snd_nxt


async def test_rfc9293_3_10_7_4_time_wait_lasts_2msl(target: Target, record: Recorder) -> None:
    """RFC 9293 3.10.7.4 / 3.4.2: TIME-WAIT ends after 2 MSL (the stack's MSL is set to 0.5 s
    here; Linux's 2 MSL is fixed at 60 s, so on Linux the FIN is still re-ACKed)."""
    flow, conn, _ = await established(target, 9006)
    await _target_closes(flow, conn)
    flow.send("A")
    fin_seq = flow.snd_nxt
    flow.send("FA")
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of FIN")
    await asyncio.sleep(2 * STACK_MSL + 0.3)
    flow.send("FA", seq=fin_seq)
    answer = await flow.expect(what="answer to a FIN after 2 MSL")
    if target.name.startswith("stack"):
        assert "R" in flags_of(answer), summary(answer)
        record(f"after 2 MSL ({2 * STACK_MSL} s) the connection is gone: {flags_of(answer)}")
    else:
        assert flags_of(answer) == "A", summary(answer)
        record(f"still in TIME-WAIT after {2 * STACK_MSL + 0.3:.1f} s: re-ACKed")
        record.deviates("time-wait-length")


async def test_rfc9293_3_6_simultaneous_close(target: Target, record: Recorder) -> None:
    """RFC 9293 3.6 (Figure 13): FINs cross -> CLOSING, then TIME-WAIT; both FINs ACKed."""
    flow, conn, _ = await established(target, 9007)
    conn.close()
    fin = await flow.wire.expect(lambda p: flow.mine(p) and _fin(p), what="FIN")
    # Our FIN crosses theirs: it does not acknowledge their FIN yet.
    our_fin = flow.snd_nxt
    flow.send("FA", ack=fin[TCP].seq)
    ack = await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of our FIN")
    flow.absorb(fin)
    flow.send("A")  # now acknowledge their FIN: they enter TIME-WAIT
    await asyncio.sleep(0.1)
    flow.send("FA", seq=our_fin)
    again = await flow.expect(lambda p: "A" in flags_of(p), what="TIME-WAIT re-ACK")
    record(f"crossing FINs ACKed ({summary(ack)}); TIME-WAIT re-ACKs")
    assert again[TCP].ack == seq_add(our_fin, 1) and "R" not in flags_of(again)


async def test_rfc5681_4_2_out_of_order_fin_gets_a_dup_ack(
    target: Target, record: Recorder
) -> None:
    """RFC 5681 4.2: a FIN past a hole (the data before it lost) is acknowledged at once
    with a duplicate ACK; it counts once the hole is filled (RFC 9293 3.10.7.4 eighth)."""
    flow, conn, _ = await established(target, 9050)
    base = flow.snd_nxt
    flow.send("FA", seq=seq_add(base, 100))
    dup = await flow.expect(lambda p: "A" in flags_of(p), timeout=1.0, what="duplicate ACK")
    record("dup ACK " + summary(dup))
    assert dup[TCP].ack == base
    assert not conn.eof
    flow.send("PA", payload=b"A" * 100, seq=base)
    flow.snd_nxt = seq_add(base, 101)
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of the data and FIN")
    assert await conn.wait_eof(2.0)
    assert await conn.wait_data(100) == b"A" * 100
