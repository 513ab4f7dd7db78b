"""Opening a connection: SYN-SENT (RFC 9293 3.10.7.3), SYN-RECEIVED, and option negotiation."""

from __future__ import annotations

import asyncio

import pytest

from tests.conformance.conftest import Recorder
from tests.conformance.harness import (
    TCP,
    Flow,
    Target,
    established,
    established_active,
    flags_of,
    payload_of,
    seq_add,
    summary,
    tcp_options,
)


async def test_rfc9293_3_10_7_3_syn_sent_bad_ack_gets_rst(target: Target, record: Recorder) -> None:
    """RFC 9293 3.10.7.3: in SYN-SENT an unacceptable ACK gets <SEQ=SEG.ACK><CTL=RST>."""
    task = target.connect(6001)
    syn = await target.wire.expect(lambda p: TCP in p and p[TCP].dport == 6001, what="SYN")
    flow = Flow(target.wire, 6001, syn[TCP].sport)
    flow.absorb(syn)
    bad_ack = seq_add(syn[TCP].seq, 1000)
    flow.send("SA", ack=bad_ack, options=[("MSS", 1460)], advance=False)
    rst = await flow.expect(lambda p: "R" in flags_of(p))
    record("bad SYN-ACK -> " + summary(rst))
    assert flags_of(rst) == "R" and rst[TCP].seq == bad_ack
    # The connection attempt goes on: a correct SYN-ACK completes it.
    flow.send("SA", options=[("MSS", 1460)])
    conn = await asyncio.wait_for(task, 3)
    assert conn.error is None
    record("correct SYN-ACK afterwards completes the handshake")


async def test_rfc9293_3_10_7_3_syn_sent_rst_acceptable_ack_refused(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.10.7.3: RST with an acceptable ACK in SYN-SENT -> "connection reset"."""
    task = target.connect(6002)
    syn = await target.wire.expect(lambda p: TCP in p and p[TCP].dport == 6002, what="SYN")
    flow = Flow(target.wire, 6002, syn[TCP].sport, iss=0)
    flow.send("RA", seq=0, ack=seq_add(syn[TCP].seq, 1))
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(task, 2)
    record("connect() fails with ECONNREFUSED")
    await flow.expect_none(within=0.2)


async def test_rfc9293_3_10_7_3_syn_sent_rst_without_ack_ignored(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.10.7.3: in SYN-SENT a RST without ACK (or with a bad ACK) is dropped."""
    task = target.connect(6003)
    syn = await target.wire.expect(lambda p: TCP in p and p[TCP].dport == 6003, what="SYN")
    flow = Flow(target.wire, 6003, syn[TCP].sport)
    flow.absorb(syn)
    flow.send("R", advance=False)
    flow.send("RA", ack=seq_add(syn[TCP].seq, 5000), advance=False)
    # (a retransmitted SYN may appear; nothing else may)
    await flow.expect_none(lambda p: flags_of(p) != "S", within=0.3)
    assert not task.done()
    flow.send("SA", options=[("MSS", 1460)])
    conn = await asyncio.wait_for(task, 3)
    assert conn.error is None
    record("both RSTs ignored; the handshake completes afterwards")


async def test_rfc7323_rfc2018_syn_offers_options(target: Target, record: Recorder) -> None:
    """RFC 9293 3.7.1, RFC 7323 2.2/3.2, RFC 2018 2: an active SYN offers MSS, WS, TS, SACK."""
    task = target.connect(6004)
    flow, syn = await Flow.accept(target.wire, 6004)
    opts = tcp_options(syn)
    record(summary(syn))
    assert opts.get("MSS") == 1460
    assert "WScale" in opts and "SAckOK" in opts and "Timestamp" in opts
    assert opts["Timestamp"][1] == 0
    ack = await flow.handshake_ack()
    # RFC 7323 (3.2): once agreed, TSecr echoes our TSval.
    assert tcp_options(ack)["Timestamp"][1] == tcp_options(flow.sent[0])["Timestamp"][0]
    await asyncio.wait_for(task, 3)


async def test_rfc9293_3_10_7_4_syn_received_bad_ack_gets_rst(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.10.7.4 (SYN-RECEIVED): an unacceptable ACK gets <SEQ=SEG.ACK><CTL=RST>."""
    await target.listen(6005)
    flow, _ = await Flow.open(target.wire, 6005, ack=False)
    bad = seq_add(flow.rcv_nxt, 777)
    flow.send("A", ack=bad)
    rst = await flow.expect(lambda p: "R" in flags_of(p))
    record(summary(rst))
    assert flags_of(rst) == "R" and rst[TCP].seq == bad


async def test_rfc9293_3_10_7_4_syn_received_rst_drops_half_open(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.10.7.4 (SYN-RECEIVED): an in-window RST of a passive open removes it."""
    listener = await target.listen(6006)
    flow, _ = await Flow.open(target.wire, 6006, ack=False)
    flow.send("R", advance=False)
    await asyncio.sleep(0.2)
    flow.send("A")  # completes nothing now: the half-open connection is gone
    rst = await flow.expect(lambda p: "R" in flags_of(p), what="RST to the late ACK")
    record("RST removed the half-open connection; late ACK -> " + summary(rst))
    with pytest.raises(TimeoutError):
        await listener.accept(timeout=0.3)


async def test_rfc9293_3_10_7_4_syn_received_dup_syn_resends_synack(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.10.7.4 / 3.8.1: a retransmitted SYN in SYN-RECEIVED gets the SYN-ACK again."""
    await target.listen(6007)
    flow, synack = await Flow.open(target.wire, 6007, ack=False, ts=False)
    flow.send(
        "S", seq=flow.iss, options=[("MSS", 1460), ("SAckOK", b""), ("NOP", None), ("WScale", 0)]
    )
    again = await flow.expect(lambda p: "S" in flags_of(p), what="SYN-ACK again")
    record(summary(again))
    assert flags_of(again) == "SA"
    assert again[TCP].seq == synack[TCP].seq and again[TCP].ack == seq_add(flow.iss, 1)


async def test_rfc9293_3_7_1_no_mss_option_peer_gets_536(target: Target, record: Recorder) -> None:
    """RFC 9293 3.7.1 (MUST-15): with no MSS option from the peer, send at most 536 bytes."""
    flow, conn, _ = await established(target, 6008, options=[], ts=False)
    conn.write(b"m" * 3000)
    sizes: list[int] = []
    got = 0
    while got < 3000:
        pkt = await flow.expect(lambda p: len(payload_of(p)) > 0, what="data")
        n = len(payload_of(pkt))
        sizes.append(n)
        got += n
        flow.send("A")
    record(f"segment sizes {sizes}")
    assert max(sizes) <= 536


async def test_rfc7323_2_2_window_scale_both_sides(target: Target, record: Recorder) -> None:
    """RFC 7323 2.2/2.3: both SYNs carry WS -> the peer's window field is scaled."""
    opts = [("MSS", 1460), ("NOP", None), ("WScale", 7)]
    await target.listen(6009)
    flow, synack = await Flow.open(target.wire, 6009, opts, ts=False, ack=False)
    assert "WScale" in tcp_options(synack)
    flow.window = 100  # x 2**7 = 12800 bytes
    flow.send("A")
    # (the listener hands the connection over once the handshake completed)
    conn = await _accept_last(target)
    conn.write(b"w" * 8000)
    await asyncio.sleep(0.5)
    sent = _bytes_in_flight(flow)
    record(f"window field 100 << 7: {sent} bytes sent before any ACK")
    assert 100 < sent <= 12800


async def test_rfc7323_2_2_window_scale_one_side_off(target: Target, record: Recorder) -> None:
    """RFC 7323 1.3/2.2: no WS in the peer's SYN -> none in the SYN-ACK, windows unscaled."""
    await target.listen(6010)
    flow, synack = await Flow.open(target.wire, 6010, [("MSS", 1460)], ts=False, ack=False)
    assert "WScale" not in tcp_options(synack)
    flow.window = 2000
    flow.send("A")
    conn = await _accept_last(target)
    conn.write(b"w" * 8000)
    await asyncio.sleep(0.5)
    sent = _bytes_in_flight(flow)
    record(f"no WS option in SYN-ACK; window 2000: {sent} bytes sent before any ACK")
    assert 0 < sent <= 2000


async def test_rfc7323_3_2_timestamps_echoed(target: Target, record: Recorder) -> None:
    """RFC 7323 3.2/4.3: TSecr of the SYN-ACK and of later ACKs echoes the peer's TSval."""
    flow, conn, synack = await established(target, 6011)
    syn_tsval = tcp_options(flow.sent[0])["Timestamp"][0]
    assert tcp_options(synack)["Timestamp"][1] == syn_tsval
    flow.send("PA", payload=b"hello")
    data_tsval = flow.ts_val
    ack = await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK")
    echoed = tcp_options(ack)["Timestamp"][1]
    record(f"SYN TSval {syn_tsval} echoed; data TSval {data_tsval} -> TSecr {echoed}")
    assert echoed == data_tsval
    assert await conn.wait_data(5) == b"hello"


async def test_rfc7323_3_2_no_timestamps_unless_offered(target: Target, record: Recorder) -> None:
    """RFC 7323 3.2: without TS in the peer's SYN, no segment of the connection carries TS."""
    flow, conn, synack = await established(target, 6012, ts=False)
    flow.send("PA", payload=b"hello")
    ack = await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK")
    conn.write(b"data")
    data = await flow.expect(lambda p: len(payload_of(p)) > 0, what="data")
    for p in (synack, ack, data):
        assert "Timestamp" not in tcp_options(p), summary(p)
    record("no TSopt in SYN-ACK, ACK or data")


async def test_rfc7323_5_3_paws_old_timestamp_dropped(target: Target, record: Recorder) -> None:
    """RFC 7323 5.3: a segment with TSval older than TS.Recent is dropped and ACKed."""
    flow, conn, _ = await established(target, 6013)
    flow.send("PA", payload=b"new")
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK")
    assert await conn.wait_data(3) == b"new"
    before = target.counters()
    old = (flow.ts_val - 100000) & 0xFFFFFFFF
    flow.send(
        "PA",
        payload=b"OLD",
        advance=False,
        raw_options=True,
        options=[("NOP", None), ("NOP", None), ("Timestamp", (old, flow.ts_recent))],
    )
    ack = await flow.expect(lambda p: "A" in flags_of(p), what="ACK of the PAWS drop")
    assert ack[TCP].ack == flow.snd_nxt, summary(ack)  # RCV.NXT did not move
    await asyncio.sleep(0.1)
    assert bytes(conn.data) == b"new"
    after = target.counters()
    key = "tcp.conn_dropped_paws" if target.name.startswith("stack") else "TcpExt.PAWSEstab"
    record(f"old TSval dropped, ACK sent; {key} +{after.get(key, 0) - before.get(key, 0)}")
    assert after.get(key, 0) > before.get(key, 0)


def _bytes_in_flight(flow: Flow) -> int:
    """Distinct sequence space the target sent so far (retransmissions counted once)."""
    ends = [
        (p[TCP].seq - flow.rcv_nxt) % 2**32 + len(payload_of(p))
        for p in flow.wire.drain(flow.mine)
        if payload_of(p)
    ]
    return max(ends, default=0)


async def _accept_last(target: Target):  # type: ignore[no-untyped-def]
    """The connection a listener of ``target`` accepted most recently."""
    for _ in range(40):
        conns = getattr(target, "conns", [])
        if conns and (target.name == "linux" or conns[-1].transport is not None):
            return conns[-1]
        await asyncio.sleep(0.05)
    raise AssertionError("no connection accepted")


async def test_rfc9293_3_10_7_3_syn_sent_handshake(target: Target, record: Recorder) -> None:
    """RFC 9293 3.10.7.3: SYN-ACK acking our SYN -> ESTABLISHED, ACK <SEQ=ISS+1><ACK=IRS+1>."""
    flow, conn, syn = await established_active(target, 6014)
    record("handshake completes; data flows")
    conn.write(b"hi")
    data = await flow.expect(lambda p: len(payload_of(p)) > 0)
    assert data[TCP].seq == seq_add(syn[TCP].seq, 1) and payload_of(data) == b"hi"
