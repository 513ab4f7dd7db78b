"""TCP segment format and options: parse/emit round trips, validation, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anp_async.proto.checksum import transport_checksum
from anp_async.proto.errors import ParseError
from anp_async.proto.tcp.segment import (
    ACK,
    FIN,
    PSH,
    SYN,
    TcpOptions,
    TcpSegment,
    build_options,
    build_tcp,
    build_tcp_header,
    parse_options,
    parse_tcp,
)

SRC = bytes([10, 0, 0, 1])
DST = bytes([10, 0, 0, 2])


def raw_segment(options: bytes = b"", payload: bytes = b"", flags: int = ACK) -> bytes:
    """A hand-built segment with a correct checksum."""
    off = 20 + len(options)
    hdr = bytearray(struct.pack("!HHIIBBHHH", 1234, 80, 7, 9, (off // 4) << 4, flags, 100, 0, 0))
    hdr += options
    csum = transport_checksum(SRC, DST, 6, bytes(hdr), payload)
    struct.pack_into("!H", hdr, 16, csum)
    return bytes(hdr) + payload


def test_parse_plain_header() -> None:
    seg = parse_tcp(raw_segment(payload=b"hello", flags=PSH | ACK), SRC, DST)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack) == (1234, 80, 7, 9)
    assert seg.flags == PSH | ACK and seg.window == 100
    assert bytes(seg.payload) == b"hello"
    assert isinstance(seg.payload, memoryview)
    assert seg.options is None
    assert seg.seg_len == 5


def test_seg_len_counts_syn_and_fin() -> None:
    seg = TcpSegment(1, 2, 0, 0, SYN | FIN, 0, b"abc")
    assert seg.seg_len == 5
    assert seg.has(SYN) and seg.has(SYN | FIN) and not seg.has(ACK)


def test_roundtrip_syn_options() -> None:
    opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(123456, 0))
    seg = TcpSegment(40000, 80, 0xFFFFFFF0, 0, SYN, 65535, b"", opts)
    wire = build_tcp(seg, SRC, DST)
    assert len(wire) == 40  # 20 + MSS 4 + SACKOK/TS 12 + NOP/WS 4
    back = parse_tcp(wire, SRC, DST)
    assert back == seg


def test_roundtrip_ts_only_fast_layout() -> None:
    opts = TcpOptions(timestamp=(1, 2))
    assert build_options(opts) == b"\x01\x01\x08\x0a" + struct.pack("!II", 1, 2)
    seg = TcpSegment(1, 2, 3, 4, ACK, 5, b"xyz", opts)
    assert parse_tcp(build_tcp(seg, SRC, DST), SRC, DST) == seg


def test_roundtrip_sack_blocks_with_timestamp_limited_to_three() -> None:
    blocks = ((10, 20), (30, 40), (50, 60), (70, 80))
    opts = TcpOptions(sack_blocks=blocks, timestamp=(5, 6))
    raw = build_options(opts)
    assert len(raw) <= 40 and len(raw) % 4 == 0
    back = parse_options(raw)
    assert back.timestamp == (5, 6)
    assert back.sack_blocks == blocks[:3]
    # Without timestamps four blocks fit.
    assert parse_options(build_options(TcpOptions(sack_blocks=blocks))).sack_blocks == blocks


def test_unknown_options_skipped_and_eol_stops() -> None:
    raw = bytes([30, 4, 0xAA, 0xBB, 2, 4, 0x05, 0xB4, 0, 99, 99, 99])
    o = parse_options(raw)
    assert o.mss == 1460


def test_wscale_above_14_is_clamped() -> None:
    assert parse_options(bytes([3, 3, 20, 0])).wscale == 14


@pytest.mark.parametrize(
    "raw",
    [
        bytes([2, 4, 5]),  # MSS truncated
        bytes([2, 3, 5, 0]),  # MSS wrong length
        bytes([8, 10, 0, 0]),  # TS longer than the options
        bytes([30, 1, 0, 0]),  # length below 2
        bytes([30]),  # kind without length byte
        bytes([5, 6, 0, 0, 0, 0, 0, 0]),  # SACK length not 2 + 8n
        bytes([4, 3, 0, 0]),  # SACK-permitted wrong length
    ],
)
def test_malformed_options_raise(raw: bytes) -> None:
    with pytest.raises(ParseError) as ei:
        parse_options(raw)
    assert ei.value.reason == "tcp_bad_option"


def test_truncated_and_bad_offset_and_checksum() -> None:
    good = raw_segment(payload=b"data")
    with pytest.raises(ParseError) as ei:
        parse_tcp(good[:19], SRC, DST)
    assert ei.value.reason == "tcp_truncated"
    bad_off = bytearray(good)
    bad_off[12] = 4 << 4  # 16-byte header
    with pytest.raises(ParseError) as ei:
        parse_tcp(bytes(bad_off), SRC, DST, verify_checksum=False)
    assert ei.value.reason == "tcp_bad_offset"
    bad_off[12] = 15 << 4  # 60 bytes > segment length
    with pytest.raises(ParseError) as ei:
        parse_tcp(bytes(bad_off[:40]), SRC, DST, verify_checksum=False)
    assert ei.value.reason == "tcp_bad_offset"
    corrupt = bytearray(good)
    corrupt[-1] ^= 0x01
    with pytest.raises(ParseError) as ei:
        parse_tcp(bytes(corrupt), SRC, DST)
    assert ei.value.reason == "tcp_bad_checksum"
    assert parse_tcp(bytes(corrupt), SRC, DST, verify_checksum=False).payload == b"dat`"


def test_header_checksum_covers_payload_view() -> None:
    payload = memoryview(bytearray(b"0123456789"))[2:7]
    seg = TcpSegment(5, 6, 7, 8, ACK | FIN, 9, payload, TcpOptions(timestamp=(1, 1)))
    hdr = build_tcp_header(seg, SRC, DST)
    wire = hdr + bytes(payload)
    assert parse_tcp(wire, SRC, DST) == seg
    assert build_tcp_header(seg, SRC, DST, checksum=False)[16:18] == b"\x00\x00"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_any_bytes_parse_or_parse_error(data: bytes) -> None:
    try:
        parse_tcp(data, SRC, DST, verify_checksum=False)
    except ParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_fuzz_options(data: bytes) -> None:
    try:
        parse_options(data)
    except ParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(0, 2**32 - 1),
    ack=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 255),
    window=st.integers(0, 65535),
    payload=st.binary(max_size=64),
    mss=st.none() | st.integers(0, 65535),
    wscale=st.none() | st.integers(0, 14),
    sackok=st.booleans(),
    ts=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)
def test_roundtrip_property(seq, ack, flags, window, payload, mss, wscale, sackok, ts) -> None:
    opts = TcpOptions(mss=mss, wscale=wscale, sack_permitted=sackok, timestamp=ts)
    seg = TcpSegment(1000, 2000, seq, ack, flags, window, payload, opts)
    back = parse_tcp(build_tcp(seg, SRC, DST), SRC, DST)
    if mss is None and wscale is None and not sackok and ts is None:
        assert back.options is None  # nothing to encode, no option bytes
        back.options = opts
    assert back == seg
