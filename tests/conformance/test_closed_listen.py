"""RFC 9293 3.10.7.1 (CLOSED) and 3.10.7.2 (LISTEN): answers of a port with no connection."""

from __future__ import annotations

import random

from tests.conformance.conftest import Recorder
from tests.conformance.harness import TCP, Flow, Target, flags_of, seq_add, summary, tcp_options

CLOSED_PORT = 9


def _flow(target: Target, dport: int) -> Flow:
    return Flow(target.wire, random.randrange(20000, 60000), dport)


async def test_rfc9293_3_10_7_1_closed_port_syn_gets_rst_ack(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.10.7.1: SYN to a closed port -> <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>."""
    f = _flow(target, CLOSED_PORT)
    f.send("S", options=[("MSS", 1460)])
    rst = await f.expect(lambda p: "R" in flags_of(p))
    record(summary(rst))
    assert flags_of(rst) == "AR"
    assert rst[TCP].seq == 0
    assert rst[TCP].ack == seq_add(f.iss, 1)


async def test_rfc9293_3_10_7_1_closed_port_ack_gets_rst_seq_eq_ack(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.10.7.1: ACK to a closed port -> <SEQ=SEG.ACK><CTL=RST>, no ACK bit."""
    f = _flow(target, CLOSED_PORT)
    f.send("A", ack=0x12345678, payload=b"hello")
    rst = await f.expect(lambda p: "R" in flags_of(p))
    record(summary(rst))
    assert flags_of(rst) == "R"
    assert rst[TCP].seq == 0x12345678


async def test_rfc9293_3_10_7_1_closed_port_data_without_ack(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.10.7.1: segment without ACK -> RST,ACK with ACK=SEG.SEQ+SEG.LEN (FIN counts)."""
    f = _flow(target, CLOSED_PORT)
    f.send("FP", payload=b"x" * 10)
    rst = await f.expect(lambda p: "R" in flags_of(p))
    record(summary(rst))
    assert flags_of(rst) == "AR"
    assert rst[TCP].seq == 0 and rst[TCP].ack == seq_add(f.iss, 11)


async def test_rfc9293_3_10_7_1_closed_port_rst_ignored(target: Target, record: Recorder) -> None:
    """RFC 9293 3.10.7.1: an incoming RST to a closed port is discarded (no answer)."""
    f = _flow(target, CLOSED_PORT)
    f.send("R")
    f.send("RA", ack=1234)
    await f.expect_none(within=0.4)
    record("nothing sent")


async def test_rfc9293_3_10_7_2_listen_rst_ignored(target: Target, record: Recorder) -> None:
    """RFC 9293 3.10.7.2: in LISTEN an incoming RST is ignored; the listener keeps working."""
    await target.listen(5001)
    f = _flow(target, 5001)
    f.send("R")
    f.send("RA", ack=1234)
    await f.expect_none(within=0.3)
    g, synack = await Flow.open(target.wire, 5001)
    record("RST ignored; later SYN answered: " + summary(synack))


async def test_rfc9293_3_10_7_2_listen_ack_gets_rst(target: Target, record: Recorder) -> None:
    """RFC 9293 3.10.7.2: in LISTEN an ACK is answered with <SEQ=SEG.ACK><CTL=RST>."""
    await target.listen(5002)
    f = _flow(target, 5002)
    f.send("A", ack=0xCAFEF00D)
    rst = await f.expect(lambda p: "R" in flags_of(p))
    record(summary(rst))
    assert flags_of(rst) == "R" and rst[TCP].seq == 0xCAFEF00D


async def test_rfc9293_3_10_7_2_listen_syn_gets_synack_with_mss(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.10.7.2 / 3.7.1: SYN -> SYN-ACK with ACK=SEG.SEQ+1 and an MSS option."""
    await target.listen(5003)
    f, synack = await Flow.open(target.wire, 5003)
    opts = tcp_options(synack)
    record(summary(synack))
    assert opts.get("MSS") == 1460
    assert synack[TCP].ack == seq_add(f.iss, 1)
