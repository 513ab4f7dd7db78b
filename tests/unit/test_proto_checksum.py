"""Internet checksum: known answers, the end-around case, parts alignment, scapy as oracle."""

import os
import random
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP

from anp_async.proto import checksum as checksum_module
from anp_async.proto.checksum import (
    VECTOR_MIN_LEN,
    _int_ones_sum,
    checksum,
    fold,
    ones_sum,
    pseudo_header_sum,
    sum_parts,
    transport_checksum,
    verify,
    verify_transport,
)


def reference_sum(data: bytes) -> int:
    """The textbook loop: add 16-bit words, fold carries back in."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_rfc1071_example():
    # RFC 1071 (3): bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert checksum(data) == 0x220D


def test_ipv4_header_known_answer():
    # a classic worked example: 192.168.0.1 -> 192.168.0.199, UDP, checksum b861
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum(header) == 0xB861
    filled = header[:10] + b"\xb8\x61" + header[12:]
    assert ones_sum(filled) == 0xFFFF
    assert verify(filled)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"\x00\x00\x00", 0),
        (b"\x01", 0x0100),
        (b"\xff\xff", 0xFFFF),
        (b"\xff\xff\xff\xff", 0xFFFF),
        (b"\x00\x01\xff\xfe", 0xFFFF),  # a non-zero sum folding to "negative zero"
        (b"\x80\x00\x80\x00", 0x0001),  # carry wraps around
        (b"\xff", 0xFF00),
    ],
)
def test_end_around_edge_cases(data, expected):
    assert ones_sum(data) == expected == reference_sum(data)


def test_matches_reference_on_random_buffers():
    rng = random.Random(1071)
    for n in list(range(0, 70)) + [1499, 1500, 9000, 65535]:
        data = rng.randbytes(n)
        assert ones_sum(data) == reference_sum(data)
        assert ones_sum(memoryview(data)) == reference_sum(data)
        assert ones_sum(bytearray(data)) == reference_sum(data)


def test_large_buffers_both_paths_agree_with_reference():
    # sizes around the numpy threshold, odd tails of 1..3 bytes, unaligned views
    rng = random.Random(4096)
    backing = rng.randbytes(70000)
    for n in [VECTOR_MIN_LEN - 1, VECTOR_MIN_LEN, 2049, 2050, 2051, 9001, 65536, 65537]:
        for start in (0, 1, 3):
            view = memoryview(backing)[start : start + n]
            expected = reference_sum(view.tobytes())
            assert ones_sum(view) == expected, (n, start)
            assert _int_ones_sum(view) == expected
    for fill, expected in ((b"\x00", 0), (b"\xff", 0xFFFF)):
        assert ones_sum(fill * 10000) == expected == _int_ones_sum(fill * 10000)
    checksum_module.ones_sum(bytes(VECTOR_MIN_LEN))
    assert checksum_module._vector_loaded


def test_all_ones_buffers_never_fold_to_zero():
    for n in range(2, 40, 2):
        assert ones_sum(b"\xff" * n) == 0xFFFF
    assert checksum(b"\x00" * 20) == 0xFFFF


def test_fold():
    assert fold(0) == 0
    assert fold(0xFFFF) == 0xFFFF
    assert fold(0x1FFFE) == 0xFFFF
    assert fold(0x10000) == 1


def test_parts_equal_whole_at_every_split():
    data = os.urandom(37)
    whole = checksum(data)
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            assert checksum(data[:i], data[i:j], data[j:]) == whole, (i, j)
    assert sum_parts([]) == 0
    assert sum_parts([b"\x12", b"\x34"]) == 0x1234


def test_pseudo_header_sum_matches_bytes():
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    for length in (0, 8, 1500, 65535):
        expected = ones_sum(src + dst + struct.pack("!BBH", 0, 17, length))
        assert pseudo_header_sum(src, dst, 17, length) == expected


@pytest.mark.parametrize("n", [0, 1, 2, 7, 100, 1460])
def test_transport_checksum_matches_scapy(n):
    payload = os.urandom(n)
    src, dst = "10.1.2.3", "10.200.0.9"
    pkt = IP(bytes(IP(src=src, dst=dst) / UDP(sport=5000, dport=53) / payload))
    hdr = struct.pack("!HHHH", 5000, 53, 8 + n, 0)
    s, d = bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))
    expected = pkt[UDP].chksum
    got = transport_checksum(s, d, 17, hdr, payload)
    assert (got or 0xFFFF) == expected
    seg = bytes(pkt[UDP])
    assert verify_transport(s, d, 17, seg)
    broken = seg[:-1] + bytes([seg[-1] ^ 1]) if n else seg[:6] + b"\x00\x01"
    assert not verify_transport(s, d, 17, broken)

    tcp = IP(bytes(IP(src=src, dst=dst) / TCP(sport=1, dport=2, seq=7, flags="PA") / payload))
    raw_tcp = bytes(tcp[TCP])
    zeroed = raw_tcp[:16] + b"\x00\x00" + raw_tcp[18:]
    assert transport_checksum(s, d, 6, zeroed[:20], zeroed[20:]) == tcp[TCP].chksum
    assert verify_transport(s, d, 6, raw_tcp)
