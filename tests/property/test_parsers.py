"""Any bytes in: a parsed object or ParseError out, never anything else.

Random bytes mostly die at the first check, so each parser is also fed mutations of a
valid packet (bytes changed, cut short, extended; for IPv4 with the header checksum
fixed up so the deeper checks are reached).
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from anp_async.proto.arp import OP_REPLY, OP_REQUEST, ArpPacket, ArpTable, build_arp, parse_arp
from anp_async.proto.checksum import checksum, ones_sum
from anp_async.proto.errors import ParseError
from anp_async.proto.ethernet import ETH_P_IP, build_ethernet_header, parse_ethernet
from anp_async.proto.icmp import (
    ECHO_REQUEST,
    PORT_UNREACH,
    build_dest_unreachable,
    build_echo,
    parse_icmp,
    parse_icmp_error,
)
from anp_async.proto.ipv4 import (
    IPv4Header,
    Reassembler,
    build_ipv4_header,
    parse_ipv4,
    parse_ipv4_header,
)
from anp_async.proto.udp import build_udp_header, parse_udp

SRC = bytes([10, 0, 0, 1])
DST = bytes([10, 0, 0, 2])
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")

addresses = st.binary(min_size=4, max_size=4)


def _udp_packet() -> bytes:
    data = b"hello, world"
    udp = build_udp_header(1234, 53, SRC, DST, data) + data
    return build_ipv4_header(SRC, DST, 17, len(udp), ident=99) + udp


VALID_IP = _udp_packet()
VALID_UDP = VALID_IP[20:]
VALID_ICMP_ERR = build_dest_unreachable(PORT_UNREACH, VALID_IP)
VALID_ECHO = build_echo(ECHO_REQUEST, 1, 2, b"abcdefgh")
VALID_ARP = build_arp(ArpPacket(OP_REQUEST, MAC_A, SRC, bytes(6), DST))
VALID_FRAME = build_ethernet_header(MAC_B, MAC_A, ETH_P_IP) + VALID_IP


@st.composite
def mutated(draw, packet: bytes) -> bytes:
    """``packet`` with a few bytes changed, then maybe cut short or extended."""
    buf = bytearray(packet)
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(buf) - 1))
        buf[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(buf)))
    if draw(st.booleans()):
        buf = buf[:cut]
    buf += draw(st.binary(max_size=8))
    return bytes(buf)


def fix_ip_checksum(buf: bytes) -> bytes:
    """Recompute the header checksum if the IHL fits, so validation goes past it."""
    if len(buf) < 20:
        return buf
    ihl = (buf[0] & 0x0F) * 4
    if ihl < 20 or ihl > len(buf):
        return buf
    b = bytearray(buf)
    b[10:12] = b"\x00\x00"
    b[10:12] = checksum(bytes(b[:ihl])).to_bytes(2, "big")
    return bytes(b)


def parses_or_parse_error(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ParseError as exc:
        assert exc.reason and isinstance(exc.reason, str)
        return None


# -- arbitrary bytes -----------------------------------------------------------------------


@given(st.binary(max_size=100))
def test_ethernet_any_bytes(data):
    out = parses_or_parse_error(parse_ethernet, data)
    if out is not None:
        assert len(out[3]) == len(data) - 14


@given(st.binary(max_size=64))
def test_arp_any_bytes(data):
    out = parses_or_parse_error(parse_arp, memoryview(data))
    if out is not None:
        assert build_arp(out) == data[:28]


@given(st.binary(max_size=120), st.booleans())
def test_ipv4_any_bytes(data, verify):
    out = parses_or_parse_error(parse_ipv4, data, verify_checksum=verify)
    if out is not None:
        hdr, payload = out
        assert len(payload) == hdr.total_length - hdr.header_len <= len(data)
    parses_or_parse_error(parse_ipv4_header, data, verify_checksum=verify)


@given(st.binary(max_size=120), st.booleans())
def test_icmp_any_bytes(data, verify):
    msg = parses_or_parse_error(parse_icmp, data, verify_checksum=verify)
    if msg is not None:
        out = parses_or_parse_error(parse_icmp_error, msg)
        if out is not None:
            assert len(out[1]) == 8


@given(st.binary(max_size=80), addresses, addresses, st.booleans())
def test_udp_any_bytes(data, src, dst, verify):
    out = parses_or_parse_error(parse_udp, data, src, dst, verify_checksum=verify)
    if out is not None:
        assert len(out[2]) <= len(data) - 8


# -- mutated valid packets -------------------------------------------------------------------


@given(mutated(VALID_FRAME))
def test_ethernet_mutated(data):
    parses_or_parse_error(parse_ethernet, data)


@given(mutated(VALID_ARP))
def test_arp_mutated(data):
    out = parses_or_parse_error(parse_arp, data)
    if out is not None:
        assert out.op in (OP_REQUEST, OP_REPLY)


@given(mutated(VALID_IP), st.booleans())
def test_ipv4_mutated(data, fix):
    if fix:
        data = fix_ip_checksum(data)
    out = parses_or_parse_error(parse_ipv4, data)
    if out is not None:
        hdr, payload = out
        assert ones_sum(data[: hdr.header_len]) == 0xFFFF
        parses_or_parse_error(parse_udp, payload, hdr.src, hdr.dst)


@given(mutated(VALID_UDP))
def test_udp_mutated(data):
    parses_or_parse_error(parse_udp, data, SRC, DST)


@given(mutated(VALID_ICMP_ERR), mutated(VALID_ECHO))
def test_icmp_mutated(err, echo):
    for data in (err, echo):
        msg = parses_or_parse_error(parse_icmp, data, verify_checksum=False)
        if msg is not None:
            parses_or_parse_error(parse_icmp_error, msg)


@given(mutated(VALID_IP))
def test_icmp_error_quoting_anything(original):
    msg = parse_icmp(build_dest_unreachable(PORT_UNREACH, original))
    parses_or_parse_error(parse_icmp_error, msg)


# -- checksum ------------------------------------------------------------------------------


def reference_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(st.lists(st.binary(max_size=40), max_size=6))
def test_checksum_of_parts_equals_reference(parts):
    whole = b"".join(parts)
    assert ones_sum(whole) == reference_sum(whole)
    assert checksum(*parts) == ~reference_sum(whole) & 0xFFFF


# -- reassembly ----------------------------------------------------------------------------


def _hdr(offset: int, more: bool, ident: int) -> IPv4Header:
    return IPv4Header(0, 20, ident, 1 if more else 0, offset, 64, 17, 0, SRC, DST)


fragments = st.lists(
    st.tuples(
        st.integers(0, 8200).map(lambda x: x * 8),
        st.integers(0, 300),
        st.booleans(),
        st.integers(0, 3),
        st.floats(0, 100),
    ),
    max_size=40,
)


@settings(max_examples=200)
@given(fragments)
def test_reassembler_never_crashes_and_stays_bounded(frags):
    r = Reassembler(max_bytes=2000, max_datagrams=3, timeout=10.0)
    now = 0.0
    for offset, length, more, ident, dt in frags:
        now += dt
        out = r.add(_hdr(offset, more, ident), bytes(length), now)
        if out is not None:
            assert len(out) + 20 <= 65535
        assert r.bytes_held <= 2000 and len(r) <= 3
        r.poll(now)
        deadline = r.next_deadline()
        assert deadline is None or deadline > now


@given(st.binary(min_size=9, max_size=3000), st.integers(1, 64), st.randoms())
def test_reassembly_of_shuffled_duplicated_fragments(payload, units, rnd: random.Random):
    size = units * 8
    parts = [
        (o, payload[o : o + size], o + size < len(payload)) for o in range(0, len(payload), size)
    ]
    if len(parts) < 2:
        return
    order = parts + rnd.sample(parts, k=min(3, len(parts)))
    rnd.shuffle(order)
    r = Reassembler()
    results = [r.add(_hdr(o, m, 1), d, 0.0) for o, d, m in order]
    done = [x for x in results if x is not None]
    assert done[0] == payload


# -- ARP table -------------------------------------------------------------------------------

arp_ops = st.lists(
    st.tuples(
        st.sampled_from(["arp", "resolve", "poll"]),
        st.integers(0, 5),  # which peer
        st.sampled_from([OP_REQUEST, OP_REPLY]),
        st.floats(0, 3),
    ),
    max_size=60,
)


@settings(max_examples=200)
@given(arp_ops)
def test_arp_table_random_operations_stay_bounded(ops):
    t = ArpTable(DST, MAC_B, ttl=5.0, hold_per_ip=2, max_pending_ips=2, max_entries=3)
    now = 0.0
    held = 0
    out = 0
    for kind, peer, op, dt in ops:
        now += dt
        ip = bytes([10, 0, 1, peer])
        mac = bytes([2, 0, 0, 0, 1, peer])
        if kind == "arp":
            target = DST if peer % 2 else ip
            frames, released = t.on_arp(ArpPacket(op, mac, ip, bytes(6), target), now)
            out += len(released)
        elif kind == "resolve":
            frames = t.resolve(ip, object(), now)
            held += 1
        else:
            frames, failed = t.poll(now)
            out += sum(len(p) for _, p in failed)
        for _, payload in frames:
            assert parse_arp(payload).sender_ip == DST
        assert len(t.entries()) <= 3 and len(t.pending()) <= 2
        assert all(n <= 2 for _, n in t.pending())
    # let every outstanding resolution run out of retries
    for _ in range(t.max_retries + 2):
        now += t.retry_interval
        _, failed = t.poll(now)
        out += sum(len(p) for _, p in failed)
    assert t.pending() == [] and t.next_deadline() is None or t.next_deadline() > now
    # every held packet was released, handed back as failed, or counted as dropped
    assert held == out + t.counters["hold_dropped"]
