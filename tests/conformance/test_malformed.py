"""Damaged and malformed segments: checksums (RFC 9293 3.1, RFC 791), options, data offset."""

from __future__ import annotations

import random

from tests.conformance.conftest import Recorder
from tests.conformance.harness import (
    IP,
    TCP,
    Flow,
    Target,
    flags_of,
    raw_tcp,
    summary,
    tcp_options,
)

MSS_1460 = b"\x02\x04\x05\xb4"


def _grew(before: dict[str, int], after: dict[str, int], *keys: str) -> str:
    """The first of ``keys`` whose counter grew, with its increase ("" if none did)."""
    for k in keys:
        d = after.get(k, 0) - before.get(k, 0)
        if d > 0:
            return f"{k} +{d}"
    return ""


async def _syn_raw(target: Target, port: int, **kw) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Send a hand-built SYN to ``port``; returns (source port, ISS)."""
    sport = random.randrange(20000, 60000)
    iss = random.getrandbits(32)
    w = target.wire
    ip_fields = kw.pop("ip_fields", {})
    w.send_tcp_bytes(raw_tcp(w.my_ip, w.target_ip, sport, port, iss, **kw), **ip_fields)
    return sport, iss


def _from(target: Target, sport: int):  # type: ignore[no-untyped-def]
    return lambda p: TCP in p and p[TCP].dport == sport


async def _listener_still_answers(target: Target, port: int) -> None:
    _, synack = await Flow.open(target.wire, port, ack=False)
    assert flags_of(synack) == "SA"


async def test_rfc9293_3_1_bad_tcp_checksum_dropped(target: Target, record: Recorder) -> None:
    """RFC 9293 3.1 (MUST-2/3): a segment with a bad checksum is discarded silently."""
    await target.listen(8001)
    before = target.counters()
    sport, _ = await _syn_raw(target, 8001, options=MSS_1460, bad_checksum=True)
    await target.wire.expect_none(_from(target, sport), within=0.4)
    counted = _grew(before, target.counters(), "tcp.tcp_bad_checksum", "Tcp.InCsumErrors")
    record(f"no answer; counted {counted}")
    assert counted
    await _listener_still_answers(target, 8001)


async def test_rfc791_3_1_bad_ip_checksum_dropped(target: Target, record: Recorder) -> None:
    """RFC 791 3.1 / RFC 1122 3.2.1.2: a datagram with a bad header checksum is discarded."""
    await target.listen(8002)
    before = target.counters()
    sport, _ = await _syn_raw(target, 8002, options=MSS_1460, ip_fields={"chksum": 0x1234})
    await target.wire.expect_none(_from(target, sport), within=0.4)
    counted = _grew(
        before, target.counters(), "ip.ip_bad_checksum", "IpExt.InCsumErrors", "Ip.InHdrErrors"
    )
    record(f"no answer; counted {counted}")
    assert counted


async def _malformed_option_case(
    target: Target, record: Recorder, port: int, options: bytes, data_offset: int | None = None
) -> None:
    """Stack: drop the segment (counted). Linux: stop parsing options, answer the SYN."""
    await target.listen(port)
    before = target.counters()
    sport, iss = await _syn_raw(target, port, options=options, data_offset=data_offset)
    if target.name.startswith("stack"):
        await target.wire.expect_none(_from(target, sport), within=0.4)
        counted = _grew(before, target.counters(), "tcp.tcp_bad_option")
        record(f"segment dropped, counted {counted}")
        assert counted
        record.deviates("bad-options")
    else:
        synack = await target.wire.expect(_from(target, sport), what="SYN-ACK")
        record(f"options ignored from the bad one on; answered {summary(synack)}")
        assert flags_of(synack) == "SA" and synack[TCP].ack == (iss + 1) & 0xFFFFFFFF
        record.deviates("bad-options")
    await _listener_still_answers(target, port)


async def test_rfc9293_3_1_option_length_zero(target: Target, record: Recorder) -> None:
    """RFC 9293 3.1 (MUST-7): an option with length 0 is handled without harm."""
    await _malformed_option_case(target, record, 8003, MSS_1460 + b"\x22\x00")


async def test_rfc9293_3_1_option_length_one(target: Target, record: Recorder) -> None:
    """RFC 9293 3.1 (MUST-7): an option with length 1 is handled without harm."""
    await _malformed_option_case(target, record, 8004, MSS_1460 + b"\x08\x01")


async def test_rfc9293_3_1_option_past_header_end(target: Target, record: Recorder) -> None:
    """RFC 9293 3.1 (MUST-7): an option running past the data offset is handled without harm."""
    # NOP NOP then an MSS option (length 4) with only 2 of its bytes inside the header.
    await _malformed_option_case(target, record, 8005, b"\x01\x01\x02\x04", data_offset=6)


async def test_rfc9293_3_1_data_offset_beyond_segment(target: Target, record: Recorder) -> None:
    """RFC 9293 3.1: Data Offset (15 words) larger than the segment -> discarded."""
    await target.listen(8006)
    before = target.counters()
    sport, _ = await _syn_raw(target, 8006, data_offset=15)
    await target.wire.expect_none(_from(target, sport), within=0.4)
    counted = _grew(before, target.counters(), "tcp.tcp_bad_offset", "Tcp.InErrs")
    record(f"no answer{'; counted ' + counted if counted else ''}")
    if target.name.startswith("stack"):
        assert counted
    await _listener_still_answers(target, 8006)


async def test_rfc9293_3_1_data_offset_below_five(target: Target, record: Recorder) -> None:
    """RFC 9293 3.1: Data Offset below 5 words (shorter than the fixed header) -> discarded."""
    await target.listen(8007)
    before = target.counters()
    sport, _ = await _syn_raw(target, 8007, data_offset=4)
    await target.wire.expect_none(_from(target, sport), within=0.4)
    counted = _grew(before, target.counters(), "tcp.tcp_bad_offset", "Tcp.InErrs")
    record(f"no answer; counted {counted}")
    assert counted


async def test_rfc9293_3_1_unknown_option_skipped(target: Target, record: Recorder) -> None:
    """RFC 9293 3.1 (MUST-6): an unknown option with a valid length is ignored."""
    await target.listen(8008)
    sport, iss = await _syn_raw(target, 8008, options=b"\x22\x06ABCD" + MSS_1460)
    synack = await target.wire.expect(_from(target, sport), what="SYN-ACK")
    record(summary(synack))
    assert flags_of(synack) == "SA" and "MSS" in tcp_options(synack)
    assert IP in synack
