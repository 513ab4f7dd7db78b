"""Loss detection and congestion signals visible on the wire: D-SACK (RFC 2883), ECN
(RFC 3168) and the tail loss probe (RFC 8985)."""

from __future__ import annotations

import asyncio
import random

from tests.conformance.conftest import Recorder
from tests.conformance.harness import (
    IP,
    TCP,
    Flow,
    Target,
    established,
    flags_of,
    payload_of,
    seq_add,
    summary,
    tcp_options,
)

ECE = 0x40
CWR = 0x80


def _tcp_flags(pkt) -> int:  # type: ignore[no-untyped-def]
    return int(pkt[TCP].flags)


async def test_rfc2883_dsack_reports_a_duplicate_segment(target: Target, record: Recorder) -> None:
    """RFC 2883 (4.1.1): a duplicate segment is ACKed with its range as the first SACK block."""
    flow, conn, _ = await established(target, 7601)
    first = flow.snd_nxt
    flow.send("PA", payload=b"d" * 100)
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of the data")
    await conn.wait_data(100)
    flow.send("PA", seq=first, payload=b"d" * 100, advance=False)  # the same again
    ack = await flow.expect(lambda p: "SAck" in tcp_options(p), what="ACK with a D-SACK block")
    blocks = tcp_options(ack)["SAck"]
    record("D-SACK " + summary(ack))
    assert ack[TCP].ack == flow.snd_nxt
    assert (blocks[0], blocks[1]) == (first, seq_add(first, 100))


async def test_rfc3168_ecn_setup_ce_echo_and_cwr(target: Target, record: Recorder) -> None:
    """RFC 3168 (6.1.1-6.1.3): an ECN-setup SYN gets ECE (not CWR) in the SYN-ACK; a CE mark
    is echoed with ECE until CWR arrives; the target's new data is ECT(0)."""
    port = 7602
    listener = await target.listen(port)
    flow = Flow(target.wire, random.randrange(20000, 60000), port, ts=False)
    flow.send("SEC", options=[("MSS", 1460), ("SAckOK", b"")])
    synack = await flow.expect(lambda p: "S" in flags_of(p), what="SYN-ACK")
    fl = _tcp_flags(synack)
    record(f"SYN-ACK ECE={bool(fl & ECE)} CWR={bool(fl & CWR)}")
    assert fl & ECE and not fl & CWR
    flow.send("A")
    conn = await listener.accept()
    # A CE-marked data segment: the ACK carries ECE.
    pkt = flow.seg("PA", payload=b"c" * 50)
    pkt[IP].tos = 0x03
    target.wire.send(pkt)
    flow.snd_nxt = seq_add(flow.snd_nxt, 50)
    ack = await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of the CE data")
    record("ACK of CE data: ECE=" + str(bool(_tcp_flags(ack) & ECE)))
    assert _tcp_flags(ack) & ECE
    # CWR from us: the echo stops.
    target.wire.send(flow.seg("PAC", payload=b"w" * 50))
    flow.snd_nxt = seq_add(flow.snd_nxt, 50)
    ack2 = await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK after CWR")
    assert not _tcp_flags(ack2) & ECE
    await conn.wait_data(100)
    # The target's new data is ECN-capable (ECT(0)).
    conn.write(b"e" * 20)
    data = await flow.expect(lambda p: len(payload_of(p)) > 0, what="data")
    record(f"data ECN field {data[IP].tos & 3}")
    assert data[IP].tos & 3 == 0x02


async def test_rfc8985_tail_loss_probe_resends_the_tail(target: Target, record: Recorder) -> None:
    """RFC 8985 (7.3): with the tail of a flight unacknowledged, the first retransmission is
    a probe ending at SND.NXT (the last segment), long before an RTO would resend SND.UNA."""
    flow, conn, _ = await established(target, 7603)
    conn.write(b"t" * 3000)
    got: list = []  # type: ignore[type-arg]
    loop = asyncio.get_running_loop()
    while sum(len(payload_of(p)) for p in got) < 3000:
        got.append(await flow.expect(lambda p: len(payload_of(p)) > 0, what="data"))
    t_sent = loop.time()
    top = seq_add(got[0][TCP].seq, 3000)
    flow.send("A", ack=seq_add(got[0][TCP].seq, len(payload_of(got[0]))))  # only the first
    probe = await flow.expect(lambda p: len(payload_of(p)) > 0, timeout=3.0, what="probe")
    waited = loop.time() - t_sent
    end = seq_add(probe[TCP].seq, len(payload_of(probe)))
    record(f"first retransmission after {waited * 1000:.0f} ms: {summary(probe)}")
    assert end == top and probe[TCP].seq != seq_add(got[0][TCP].seq, len(payload_of(got[0])))
    flow.send("A", ack=top)
