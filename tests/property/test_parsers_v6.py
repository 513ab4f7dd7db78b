"""IPv6, ICMPv6 and ND parsers: any bytes in, a parse or ParseError out, never anything else.

Random bytes die early, so mutations of valid packets (extension headers, fragments, ND
with options) are fed too, with the ICMPv6 checksum left unchecked where the deeper
checks are the point.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from anp_async.proto import icmpv6, nd
from anp_async.proto.errors import ParseError
from anp_async.proto.ipv6 import (
    NH_DSTOPTS,
    NH_FRAGMENT,
    NH_HOPOPTS,
    NH_ICMPV6,
    Reassembler6,
    build_ipv6_header,
    parse_ipv6,
)

A = bytes.fromhex("fd000000000000000000000000000001")
B = bytes.fromhex("fd000000000000000000000000000002")
MAC = bytes.fromhex("020000000001")


def _packet(nh: int, body: bytes, hlim: int = 64) -> bytes:
    return build_ipv6_header(A, B, nh, len(body), hlim) + body


_UDP = b"\x00\x01\x00\x02\x00\x0c\x00\x00data"
VALID = [
    _packet(17, _UDP),
    _packet(
        NH_HOPOPTS,
        bytes([NH_DSTOPTS, 0, 5, 2, 0, 0, 1, 0]) + bytes([17, 0, 1, 4, 0, 0, 0, 0]) + _UDP,
    ),
    _packet(NH_FRAGMENT, bytes([17, 0, 0, 1, 0, 0, 0, 7]) + _UDP + bytes(4)),
    _packet(NH_ICMPV6, icmpv6.build_icmpv6(135, 0, 0, B + b"\x01\x01" + MAC, A, B), 255),
    _packet(NH_ICMPV6, icmpv6.build_icmpv6(136, 0, 0x60000000, B + b"\x02\x01" + MAC, A, B), 255),
    _packet(NH_ICMPV6, icmpv6.build_icmpv6(128, 0, 0x10002, b"ping", A, B)),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 4))):
        buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        buf = buf[: draw(st.integers(0, len(buf)))]
    return bytes(buf + draw(st.binary(max_size=8)))


def _walk(data: bytes, reasm: Reassembler6) -> None:
    """What the stack does with a received packet, down to ND."""
    try:
        hdr, payload = parse_ipv6(data)
        assert hdr.header_len <= hdr.total_length <= len(data)
        if hdr.fragment is not None:
            reasm.add(hdr, payload, 0.0)
            assert reasm.bytes_held <= reasm.max_bytes
            return
        if hdr.proto == NH_ICMPV6:
            msg = icmpv6.parse_icmpv6(payload, hdr.src, hdr.dst, verify_checksum=False)
            if msg.is_error:
                icmpv6.parse_error(msg)
            elif msg.type in icmpv6.ND_TYPES:
                nd.parse_nd(msg, hdr.src, hdr.dst, hdr.hop_limit)
    except ParseError as exc:
        assert exc.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_any_bytes(data: bytes) -> None:
    _walk(b"\x60" + data, Reassembler6())


@settings(max_examples=500, deadline=None)
@given(mutated())
def test_mutated_packets(data: bytes) -> None:
    _walk(data, Reassembler6(max_bytes=4096, max_datagrams=4))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=60),
    st.binary(min_size=16, max_size=16),
)
def test_icmpv6_and_nd_any_body(type_: int, code: int, body: bytes, src: bytes) -> None:
    wire = icmpv6.build_icmpv6(type_, code, 0, body, src, B)
    msg = icmpv6.parse_icmpv6(wire, src, B)  # what we build always verifies
    assert bytes(msg.body) == body
    try:
        if msg.is_error:
            icmpv6.parse_error(msg)
        else:
            nd.parse_nd(msg, src, B, 255)
    except ParseError as exc:
        assert exc.reason


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 100), st.booleans()), max_size=12))
def test_reassembler_any_fragments(frags: list[tuple[int, int, bool]]) -> None:
    r = Reassembler6(max_bytes=2048, max_datagrams=2)
    for units, size, more in frags:
        fh = bytes([17, 0]) + ((units * 8) | int(more)).to_bytes(2, "big") + b"\0\0\0\1"
        data = bytes(size * 8 if more else size)
        try:
            hdr, payload = parse_ipv6(_packet(NH_FRAGMENT, fh + data))
        except ParseError:
            continue
        out = r.add(hdr, payload, 0.0)
        if out is not None:
            assert out[0] == 17
        assert 0 <= r.bytes_held <= 2048 and len(r) <= 2
