"""The listen queue under a burst of SYNs, and SYN cookies when the first segment after the
handshake is lost (RFC 4987 3.6; Linux's sizing of the SYN queue by the listen backlog)."""

from __future__ import annotations

import asyncio
import random

from tests.conformance.conftest import Recorder
from tests.conformance.harness import TCP, Flow, Target, flags_of, seq_add, summary


def _cookies(target: Target, before: dict[str, int], after: dict[str, int]) -> int:
    key = "tcp.syncookies_sent" if target.name.startswith("stack") else "TcpExt.SyncookiesSent"
    return after.get(key, 0) - before.get(key, 0)


async def _half_open(target: Target, port: int, n: int) -> list[Flow]:
    """``n`` SYNs from fresh ports that never complete; each answered with a SYN-ACK."""
    flows = []
    for _ in range(n):
        f = Flow(target.wire, random.randrange(20000, 60000), port)
        f.send("S", options=[("MSS", 1460)])
        flows.append(f)
    for f in flows:
        await f.expect(lambda p: flags_of(p) == "SA", what="SYN-ACK")
    return flows


async def test_syn_queue_holds_backlog_plus_one(target: Target, record: Recorder) -> None:
    """Linux (since 6.14: inet_csk_reqsk_queue_is_full is qlen > backlog) keeps backlog + 1
    half-open connections per listener; every SYN beyond them gets a cookie. The stack sizes
    its SYN queue the same way."""
    backlog = 4
    await target.listen(9120, backlog=backlog)
    before = target.counters()
    await _half_open(target, 9120, 10)
    cookies = _cookies(target, before, target.counters())
    record(f"listen({backlog}), 10 SYNs: {10 - cookies} half-open, {cookies} cookies")
    assert 10 - cookies == backlog + 1


async def _cookie_flow(target: Target, port: int) -> tuple[Flow, int]:
    """A handshake answered with a cookie (the SYN queue filled first); the SYN-ACK is not
    yet acknowledged. Returns the flow and the cookie."""
    await target.listen(port, backlog=1)
    await _half_open(target, port, 2)  # the SYN queue is full (backlog + 1)
    before = target.counters()
    flow, synack = await Flow.open(target.wire, port, ack=False)
    assert _cookies(target, before, target.counters()) == 1, "no cookie"
    return flow, synack[TCP].seq


async def test_cookie_handshake_ack_lost_data_completes(target: Target, record: Recorder) -> None:
    """RFC 4987 3.6: the handshake's ACK is lost, the first data segment (SEQ = ISN + 1)
    carries the cookie back: the connection opens with that data."""
    flow, _ = await _cookie_flow(target, 9121)
    flow.send("PA", payload=b"first")
    ack = await flow.expect(lambda p: "A" in flags_of(p) and "R" not in flags_of(p), what="ACK")
    record(f"first data segment as the cookie's ACK -> {summary(ack)}")
    assert ack[TCP].ack == flow.snd_nxt


async def test_cookie_first_segment_lost_is_reset(target: Target, record: Recorder) -> None:
    """The handshake's ACK and the first data segment are both lost: the next segment
    (SEQ = ISN + 1 + 100) no longer matches the cookie, which encodes ISN (Linux's
    __cookie_v4_check takes SEQ - 1): Linux answers RST (<SEQ=SEG.ACK><CTL=RST>, RFC 9293
    3.10.7.2: an ACK to a listener); so does the stack. No stack can do better statelessly:
    the client's ISN is the cookie's only record of the SYN."""
    flow, cookie = await _cookie_flow(target, 9122)
    seq = seq_add(flow.snd_nxt, 100)
    flow.send("PA", seq=seq, payload=b"second", advance=False)
    rst = await flow.expect(lambda p: "R" in flags_of(p), what="RST")
    record(f"second segment as the cookie's ACK -> {summary(rst)}")
    assert rst[TCP].seq == seq_add(cookie, 1)
    # The first segment retransmitted still carries a valid cookie (a sender that ignored
    # the RST would open the connection with it).
    await asyncio.sleep(0.05)
    flow.send("PA", payload=b"x" * 100)
    ack = await flow.expect(lambda p: "A" in flags_of(p) and "R" not in flags_of(p), what="ACK")
    record(f"first segment retransmitted -> {summary(ack)}")
    assert ack[TCP].ack == flow.snd_nxt
