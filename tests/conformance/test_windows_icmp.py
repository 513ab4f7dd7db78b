"""Zero windows and probing (RFC 9293 3.8.6), ICMP validation (RFC 5927), SYN floods
(RFC 4987), challenge-ACK rate limiting (RFC 5961 7)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from scapy.packet import Raw

from tests.conformance.conftest import Recorder
from tests.conformance.harness import (
    ICMP,
    IP,
    TCP,
    Flow,
    Target,
    established,
    flags_of,
    payload_of,
    seq_add,
    summary,
)


async def test_rfc9293_3_8_6_receiver_advertises_zero_window(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.8.6 / 3.10.7.4: an application that does not read closes the window to 0;
    data beyond it is not accepted (ACKed with window 0); reading reopens it (window update)."""
    flow, conn, synack = await established(target, 9101, ts=False, reading=False, rcvbuf=4096)
    data = bytes(range(256)) * 64
    sent = bytearray()
    win = synack[TCP].window
    for _ in range(100):
        seq = flow.snd_nxt
        # Like a real sender, never more than the offered window (RFC 9293 3.8.6).
        chunk = data[len(sent) : len(sent) + min(512, win)]
        flow.send("PA", payload=chunk, advance=False)
        ack = await flow.expect(lambda p: "A" in flags_of(p), what="ACK")
        await asyncio.sleep(0.05)
        for late in flow.wire.drain(flow.mine):  # a delayed ACK may follow
            ack = late
        acked = (ack[TCP].ack - seq) & 0xFFFFFFFF
        if 0 < acked <= len(chunk):
            sent += chunk[:acked]
            flow.snd_nxt = ack[TCP].ack
        win = ack[TCP].window
        if win == 0:
            break
    assert win == 0, "the target never advertised a zero window"
    accepted = len(sent)
    # Data beyond a zero window: not accepted, answered with ACK, window still 0.
    flow.send("PA", payload=b"Z" * 100, advance=False)
    probe_ack = await flow.expect(lambda p: "A" in flags_of(p), what="ACK at zero window")
    assert probe_ack[TCP].ack == flow.snd_nxt and probe_ack[TCP].window == 0
    # The application reads: the window opens and the target says so.
    conn.start_reading()
    upd = await flow.expect(lambda p: p[TCP].window > 0, what="window update", timeout=2.0)
    record(f"window 0 after {accepted} bytes; beyond it ACK win=0; after read {summary(upd)}")
    got = await conn.wait_data(accepted)
    assert got == bytes(sent)


async def test_rfc9293_3_8_6_1_zero_window_probes_back_off(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.8.6.1 / RFC 1122 4.2.2.17: the peer's zero window is probed with growing
    intervals; the connection stays up while probes are answered, data flows once it opens."""
    flow, conn, _ = await established(target, 9102, ts=False, window=0)
    conn.write(b"p" * 1000)
    times = []
    for _ in range(3):
        t, probe = await flow.wire.expect_timed(flow.mine, 4.0, "zero-window probe")
        times.append(t)
        assert len(payload_of(probe)) <= 1, summary(probe)
        flow.send("A", window=0)  # answered: still closed
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)]
    record(f"probe gaps {gaps}s")
    assert gaps[1] > gaps[0] * 1.4, gaps
    assert conn.error is None
    flow.wire.drain(flow.mine)
    flow.window = 65535
    flow.send("A")
    got = await flow.collect_data(1000)
    assert got == b"p" * 1000


async def _icmp_unreachable_for(target: Target, syn, seq: int) -> None:  # type: ignore[no-untyped-def]
    quoted = bytearray(bytes(syn[IP])[: syn[IP].ihl * 4 + 8])
    off = syn[IP].ihl * 4
    quoted[off + 4 : off + 8] = seq.to_bytes(4, "big")
    w = target.wire
    w.send(IP(src=w.my_ip, dst=w.target_ip) / ICMP(type=3, code=3) / Raw(bytes(quoted)))


async def test_rfc5927_4_1_icmp_out_of_window_ignored(target: Target, record: Recorder) -> None:
    """RFC 5927 4.1: an ICMP error quoting a sequence number not in flight is ignored."""
    task = target.connect(9103)
    syn = await target.wire.expect(lambda p: TCP in p and p[TCP].dport == 9103, what="SYN")
    await _icmp_unreachable_for(target, syn, seq_add(syn[TCP].seq, 100000))
    await asyncio.sleep(0.3)
    assert not task.done(), "connection attempt aborted by an out-of-window ICMP error"
    flow = Flow.answer_syn(target.wire, syn)
    await asyncio.wait_for(task, 3)
    before = target.counters()
    record(
        "ignored; the handshake completes"
        + (
            f" (icmp_out_of_window={before.get('tcp.icmp_out_of_window')})"
            if target.name.startswith("stack")
            else f" (OutOfWindowIcmps={before.get('TcpExt.OutOfWindowIcmps')})"
        )
    )
    assert flow.snd_nxt


async def test_rfc5927_rfc1122_4_2_3_9_icmp_port_unreachable_in_window(
    target: Target, record: Recorder
) -> None:
    """RFC 1122 4.2.3.9 / RFC 5927: port unreachable quoting the SYN aborts SYN-SENT."""
    task = target.connect(9104)
    syn = await target.wire.expect(lambda p: TCP in p and p[TCP].dport == 9104, what="SYN")
    await _icmp_unreachable_for(target, syn, syn[TCP].seq)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(task, 2)
    record("connect() fails with ECONNREFUSED")


async def test_rfc5961_7_challenge_ack_rate_limited(target: Target, record: Recorder) -> None:
    """RFC 5961 7: challenge ACKs are rate limited (a burst of in-window RSTs does not get
    one ACK each)."""
    flow, conn, _ = await established(target, 9105)
    t0 = time.monotonic()
    n = 200
    for i in range(n):
        flow.send("RA", seq=seq_add(flow.snd_nxt, 100 + i), advance=False)
    dt = time.monotonic() - t0
    await asyncio.sleep(0.3)
    acks = flow.wire.drain(lambda p: flow.mine(p) and flags_of(p) == "A")
    record(f"{n} in-window RSTs in {dt:.2f}s -> {len(acks)} challenge ACKs")
    assert 1 <= len(acks) < n
    assert conn.error is None


async def test_rfc4987_syn_flood_cookies(target: Target, record: Recorder) -> None:
    """RFC 4987 3.6: with the SYN queue full, SYNs are answered with SYN cookies and a
    legitimate handshake completes through a cookie."""
    listener = await target.listen(9106, backlog=4)
    before = target.counters()
    flows = []
    for _ in range(24):
        f = Flow(target.wire, random.randrange(20000, 60000), 9106)
        f.send("S", options=[("MSS", 1460)])
        flows.append(f)
    answered = 0
    for f in flows:
        try:
            await f.expect(lambda p: flags_of(p) == "SA", timeout=0.5 if answered else 1.5)
            answered += 1
        except AssertionError:
            pass
    last = flows[-1]
    record(f"{answered}/24 SYNs answered with backlog 4")
    assert answered == 24
    last.send("A")
    conn = await listener.accept(2.0)
    last.send("PA", payload=b"cookie")
    assert await conn.wait_data(6) == b"cookie"
    after = target.counters()
    key = "tcp.syncookies_sent" if target.name.startswith("stack") else "TcpExt.SyncookiesSent"
    cookies = after.get(key, 0) - before.get(key, 0)
    record(f"handshake through a cookie completes ({key} +{cookies})")
    assert cookies > 0
