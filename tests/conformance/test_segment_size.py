"""Segment size: what the target sends fits the MSS its peer announced (RFC 9293 3.7.1,
RFC 6691), also when a TAP's TSO cuts the stack's super-segments (the stack-offload target)."""

from __future__ import annotations

from tests.conformance.conftest import Recorder
from tests.conformance.harness import TCP, Target, established, payload_of


async def test_rfc6691_segments_fit_the_mss_the_peer_announced(
    target: Target, record: Recorder
) -> None:
    """RFC 9293 3.7.1 / RFC 6691: data plus TCP options never exceed the peer's MSS."""
    data = bytes(range(256)) * 80  # 20 KiB: many segments, super-segments with TSO
    for i, (mss, ts) in enumerate(((536, True), (300, False))):
        options = [("MSS", mss), ("SAckOK", b""), ("NOP", None), ("WScale", 0)]
        flow, conn, _ = await established(target, 7301 + i, options, ts=ts)
        conn.write(data)
        got = await flow.collect_data(len(data), timeout=5.0)
        assert got == data
        sizes = [
            len(payload_of(s.pkt)) + s.pkt[TCP].dataofs * 4 - 20
            for s in target.wire.log
            if flow.mine(s.pkt) and payload_of(s.pkt)
        ]
        record(f"peer MSS {mss} (timestamps {ts}): {len(sizes)} segments, largest {max(sizes)}")
        assert max(sizes) <= mss
    if target.name == "stack-offload":
        tso = target.counters().get("tcp.tso_segments_sent", 0)
        record(f"{tso} super-segments cut by the TAP's TSO")
        assert tso > 0  # the offload path really ran
