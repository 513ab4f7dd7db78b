"""UDP header and checksum."""

import os
import struct

import pytest
from scapy.layers.inet import IP, UDP

from anp_async.proto.checksum import fold, pseudo_header_sum
from anp_async.proto.errors import ParseError
from anp_async.proto.udp import build_udp_header, parse_udp

SRC = bytes([10, 0, 0, 1])
DST = bytes([10, 0, 0, 2])


@pytest.mark.parametrize("n", [0, 1, 2, 3, 512, 1472])
def test_round_trip_and_scapy(n):
    data = os.urandom(n)
    hdr = build_udp_header(5353, 53, SRC, DST, data)
    ref = IP(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5353, dport=53) / data))
    assert hdr == bytes(ref[UDP])[:8]
    sport, dport, payload = parse_udp(hdr + data, SRC, DST)
    assert (sport, dport, payload.tobytes()) == (5353, 53, data)
    assert isinstance(payload, memoryview)


def test_parses_scapy_generated():
    raw = bytes(UDP(sport=1, dport=2) / b"hello")  # scapy leaves chksum 0 without IP
    assert parse_udp(raw, SRC, DST)[2].tobytes() == b"hello"
    ip = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"hello")
    assert parse_udp(ip[20:], SRC, DST)[:2] == (1, 2)
    with pytest.raises(ParseError):
        parse_udp(ip[20:], SRC, bytes([10, 0, 0, 3]))  # pseudo header covers addresses


def test_zero_checksum_means_none():
    seg = struct.pack("!HHHH", 7, 9, 12, 0) + b"abcd"
    assert parse_udp(seg, SRC, DST)[2].tobytes() == b"abcd"


def test_computed_zero_is_sent_as_all_ones():
    # pick two payload bytes so that the ones' complement sum is 0xffff (checksum 0)
    length = 10
    s = fold(pseudo_header_sum(SRC, DST, 17, length) + 1000 + 2000 + length)
    word = 0xFFFF - s
    data = word.to_bytes(2, "big")
    hdr = build_udp_header(1000, 2000, SRC, DST, data)
    assert hdr[6:8] == b"\xff\xff"
    assert parse_udp(hdr + data, SRC, DST)[2].tobytes() == data


def test_bad_checksum_and_verify_off():
    data = b"some data"
    seg = bytearray(build_udp_header(1, 2, SRC, DST, data) + data)
    seg[-1] ^= 1
    with pytest.raises(ParseError) as exc:
        parse_udp(seg, SRC, DST)
    assert exc.value.reason == "udp_bad_checksum"
    assert parse_udp(seg, SRC, DST, verify_checksum=False)[2].tobytes() == b"some dat`"


def test_length_validation_and_trailing_bytes():
    data = b"abc"
    seg = build_udp_header(1, 2, SRC, DST, data) + data
    for n in range(8):
        with pytest.raises(ParseError) as exc:
            parse_udp(seg[:n], SRC, DST)
        assert exc.value.reason == "udp_truncated"
    with pytest.raises(ParseError) as exc:
        parse_udp(seg[:10], SRC, DST)  # Length says 11
    assert exc.value.reason == "udp_bad_length"
    with pytest.raises(ParseError) as exc:
        parse_udp(seg[:4] + b"\x00\x07" + seg[6:], SRC, DST, verify_checksum=False)
    assert exc.value.reason == "udp_bad_length"
    # bytes past Length (e.g. padding) are not payload, and do not enter the checksum
    assert parse_udp(seg + b"\x00\x99", SRC, DST)[2].tobytes() == data


def test_oversize_refused():
    with pytest.raises(ValueError):
        build_udp_header(1, 2, SRC, DST, bytes(65528))
    assert len(build_udp_header(1, 2, SRC, DST, bytes(65527))) == 8
