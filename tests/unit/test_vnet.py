"""The virtio-net header (nic/vnet.py), the partial TCP checksum, and TSO sizing in the engine.

The partial checksum is checked the way the kernel completes it: sum from the TCP header to
the end (checksum field holding the pseudo-header sum), invert, store; the result must be
the checksum ``build_tcp_header`` computes in full. A super-segment cut at ``gso_size``
with each piece's pseudo-header adjusted must likewise give valid segments.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anp_async.nic.vnet import (
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    PLAIN_HEADER,
    VNET_HDR_LEN,
    build_tcp4_csum_header,
    build_tcp4_gso_header,
)
from anp_async.proto.checksum import ones_sum, pseudo_header_sum, verify_transport
from anp_async.proto.errors import ParseError
from anp_async.proto.tcp import ACK, SYN, TcpConfig, TcpConnection, TcpOptions, TcpSegment
from anp_async.proto.tcp.segment import (
    PSH,
    build_tcp_header,
    build_tcp_header_partial,
    parse_tcp,
)
from tests.unit.vnet_reference import VnetHeader, build_vnet_header, parse_vnet_header

SRC = bytes([10, 0, 0, 2])
DST = bytes([10, 0, 0, 1])


# ------------------------------------------------------------------ header format


def test_plain_header_is_twelve_zero_bytes() -> None:
    assert VNET_HDR_LEN == 12
    assert PLAIN_HEADER == bytes(12)
    h = parse_vnet_header(PLAIN_HEADER)
    assert h == VnetHeader()
    assert not h.is_gso and not h.needs_csum and not h.csum_trusted


def test_parse_reads_little_endian_fields() -> None:
    raw = bytes([F_NEEDS_CSUM, GSO_TCPV4 | GSO_ECN]) + struct.pack("<HHHHH", 66, 1448, 34, 16, 0)
    h = parse_vnet_header(raw + b"frame follows")
    assert h == VnetHeader(F_NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 66, 1448, 34, 16)
    assert h.is_gso and h.needs_csum and h.csum_trusted
    assert parse_vnet_header(bytes([F_DATA_VALID]) + bytes(11)).csum_trusted


def test_build_round_trips() -> None:
    h = VnetHeader(F_NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16)
    raw = build_vnet_header(h)
    assert len(raw) == VNET_HDR_LEN
    assert parse_vnet_header(raw) == h


def test_tcp4_headers() -> None:
    csum = parse_vnet_header(build_tcp4_csum_header())
    assert csum == VnetHeader(F_NEEDS_CSUM, GSO_NONE, 0, 0, 14 + 20, 16)
    gso = parse_vnet_header(build_tcp4_gso_header(32, 1448))
    # hdr_len covers Ethernet + IPv4 + TCP with options; csum_start is the TCP header.
    assert gso == VnetHeader(F_NEEDS_CSUM, GSO_TCPV4, 14 + 20 + 32, 1448, 34, 16)


def test_short_header_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as e:
        parse_vnet_header(bytes(11))
    assert e.value.reason == "vnet_truncated"


@given(st.binary(max_size=40))
def test_parse_any_bytes(data: bytes) -> None:
    try:
        h = parse_vnet_header(data)
    except ParseError:
        assert len(data) < VNET_HDR_LEN
        return
    assert build_vnet_header(h)[:10] == data[:10]


# ------------------------------------------------------------------ partial checksum


def _complete(hdr: bytes, payload: bytes) -> bytes:
    """What the kernel does with NEEDS_CSUM: sum from csum_start to the end, invert, store."""
    s = ones_sum(hdr + payload)
    full = bytearray(hdr)
    struct.pack_into("!H", full, 16, ~s & 0xFFFF)
    return bytes(full)


@pytest.mark.parametrize(
    "options",
    [
        None,
        TcpOptions(timestamp=(123456, 654321)),
        TcpOptions(timestamp=(1, 2), sack_blocks=((100, 200), (300, 400))),
        TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(5, 0)),
    ],
)
@pytest.mark.parametrize("payload", [b"", b"x", b"hello world!", bytes(range(256)) * 7])
def test_partial_checksum_completes_to_the_full_one(options, payload: bytes) -> None:
    seg = TcpSegment(40000, 5001, 0xFFFFFFF0, 77, ACK | PSH, 501, payload, options)
    partial = build_tcp_header_partial(seg, SRC, DST)
    full = build_tcp_header(seg, SRC, DST)
    assert len(partial) == len(full)
    assert partial[:16] == full[:16] and partial[18:] == full[18:]
    # The field holds the folded pseudo-header sum over the whole segment length.
    (field,) = struct.unpack_from("!H", partial, 16)
    assert field == pseudo_header_sum(SRC, DST, 6, len(partial) + len(payload))
    assert _complete(partial, payload) == full
    parsed = parse_tcp(full + payload, SRC, DST)
    assert bytes(parsed.payload) == payload


def test_super_segment_cut_by_gso_gives_valid_segments() -> None:
    """Cut as Linux's tcp_gso_segment does: same headers, seq advanced, the pseudo-header
    length fixed up per piece, checksum completed; every piece must verify."""
    mss = 1000
    payload = bytes(range(251)) * 20  # 5020 bytes: five full pieces and a short one
    seg = TcpSegment(1, 2, 1000, 9, ACK | PSH, 100, payload, TcpOptions(timestamp=(7, 8)))
    hdr = bytearray(build_tcp_header_partial(seg, SRC, DST))
    hlen = len(hdr)
    for off in range(0, len(payload), mss):
        piece = payload[off : off + mss]
        h = bytearray(hdr)
        struct.pack_into("!I", h, 4, seg.seq + off)
        struct.pack_into("!H", h, 16, pseudo_header_sum(SRC, DST, 6, hlen + len(piece)))
        wire = _complete(bytes(h), piece) + piece
        assert verify_transport(SRC, DST, 6, wire)


# ------------------------------------------------------------------ TSO sizing


MSS = 1000
LIP, RIP = SRC, DST
ISS, RISS = 1000, 5000


def _established(tso_max: int, **kw) -> TcpConnection:
    cfg = TcpConfig(
        timestamps=False, sack=False, window_scale=False, mss=MSS, tso_max=tso_max, **kw
    )
    syn = TcpSegment(49500, 80, RISS, 0, SYN, 65535, b"", TcpOptions(mss=MSS))
    conn = TcpConnection.accept_syn(cfg, LIP, 80, RIP, 49500, syn, ISS, 0.0)
    conn.output(0.0)
    conn.on_segment(TcpSegment(49500, 80, RISS + 1, ISS + 1, ACK, 65535), 0.01)
    conn.take_events()
    return conn


def test_tso_off_keeps_segments_at_mss() -> None:
    c = _established(0)
    c.send(b"a" * 10 * MSS, 1.0)
    sizes = [len(s.payload) for s in c.output(1.0)]
    assert sizes == [MSS] * 10


def test_tso_builds_super_segments_in_whole_mss() -> None:
    c = _established(4500, initial_cwnd_segments=10)
    c.send(b"a" * 10 * MSS + b"tail", 1.0)
    out = c.output(1.0)
    sizes = [len(s.payload) for s in out]
    # tso_max rounds down to 4 MSS; cwnd (10 MSS) stops the rest, the tail waits.
    assert sizes == [4 * MSS, 4 * MSS, 2 * MSS]
    assert c.info()["snd_nxt"] - c.info()["snd_una"] == 10 * MSS  # type: ignore[operator]
    # Sequence numbers follow on; the last one carries PSH only if it ends the data.
    assert [s.seq - ISS - 1 for s in out] == [0, 4 * MSS, 8 * MSS]


def test_tso_window_limit_sends_whole_segments_first() -> None:
    c = _established(64000, initial_cwnd_segments=10)
    # The peer's window is 3.5 MSS: 3 full MSS go as one super-segment now.
    c.on_segment(TcpSegment(49500, 80, RISS + 1, ISS + 1, ACK, 3500), 0.5)
    c.send(b"b" * 8 * MSS, 1.0)
    out = c.output(1.0)
    assert [len(s.payload) for s in out] == [3 * MSS]


def test_tso_last_piece_small_counts_for_nagle() -> None:
    c = _established(64000, nodelay=False)
    c.send(b"c" * 2500, 1.0)
    assert [len(s.payload) for s in c.output(1.0)] == [2500]
    # 2500 ends in a 500-byte wire segment, unacknowledged: Nagle holds the next small write.
    c.send(b"d" * 10, 1.01)
    assert c.output(1.01) == []


def test_tso_max_is_bounded_by_an_ipv4_datagram() -> None:
    assert TcpConfig().tso_max == 0
    assert TcpConfig(tso_max=10**6).tso_max == 65535 - 20 - 60
    assert TcpConfig(tso_max=-5).tso_max == 0
