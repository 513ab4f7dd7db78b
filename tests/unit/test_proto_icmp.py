"""ICMP echo and error messages."""

import os

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror

from anp_async.proto.checksum import ones_sum
from anp_async.proto.errors import ParseError
from anp_async.proto.icmp import (
    DEST_UNREACH,
    ECHO_REPLY,
    ECHO_REQUEST,
    FRAG_NEEDED,
    PORT_UNREACH,
    TIME_EXCEEDED,
    build_dest_unreachable,
    build_echo,
    build_echo_reply_from,
    build_error,
    echo_request_as,
    error_allowed,
    parse_icmp,
    parse_icmp_error,
)
from anp_async.proto.ipv4 import build_ipv4_header, parse_ipv4
from anp_async.proto.udp import build_udp_header

SRC = bytes([10, 0, 0, 1])
DST = bytes([10, 0, 0, 2])


def test_constants():
    assert (ECHO_REPLY, DEST_UNREACH, ECHO_REQUEST, TIME_EXCEEDED, PORT_UNREACH) == (
        0,
        3,
        8,
        11,
        3,
    )


@pytest.mark.parametrize("n", [0, 1, 56, 1472])
def test_echo_round_trip_matches_scapy(n):
    data = os.urandom(n)
    msg = build_echo(ECHO_REQUEST, 0x4242, 7, data)
    assert msg == bytes(ICMP(type=8, id=0x4242, seq=7) / data)
    parsed = parse_icmp(msg)
    assert (parsed.type, parsed.code, parsed.ident, parsed.seq) == (8, 0, 0x4242, 7)
    assert parsed.payload.tobytes() == data and not parsed.is_error
    assert parsed.rest == (0x4242 << 16) | 7


def test_echo_reply_from_request():
    req = parse_icmp(memoryview(build_echo(ECHO_REQUEST, 1, 65535, b"ping data")))
    rep = build_echo_reply_from(req)
    assert ones_sum(rep) == 0xFFFF
    parsed = parse_icmp(rep)
    assert (parsed.type, parsed.code, parsed.ident, parsed.seq) == (ECHO_REPLY, 0, 1, 65535)
    assert parsed.payload.tobytes() == b"ping data"
    assert IP(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(rep)))[ICMP].type == 0


def test_parse_errors():
    msg = bytearray(build_echo(ECHO_REQUEST, 1, 2, b"abc"))
    for n in range(8):
        with pytest.raises(ParseError) as exc:
            parse_icmp(msg[:n])
        assert exc.value.reason == "icmp_truncated"
    msg[-1] ^= 0x40
    with pytest.raises(ParseError) as exc:
        parse_icmp(msg)
    assert exc.value.reason == "icmp_bad_checksum"
    assert parse_icmp(msg, verify_checksum=False).payload.tobytes() == b"ab#"


def udp_packet(data=b"payload!!"):
    udp = build_udp_header(40000, 9, DST, SRC, data) + data
    return build_ipv4_header(DST, SRC, 17, len(udp), ident=3) + udp


def test_port_unreachable_quotes_header_and_8_bytes():
    original = udp_packet(b"x" * 100)
    msg = build_dest_unreachable(PORT_UNREACH, original)
    assert len(msg) == 8 + 20 + 8
    scapy_view = ICMP(msg)
    assert scapy_view.type == 3 and scapy_view.code == 3
    assert scapy_view[IPerror].src == "10.0.0.2" and scapy_view[UDPerror].sport == 40000
    parsed = parse_icmp(msg)
    assert parsed.is_error
    qhdr, first8 = parse_icmp_error(parsed)
    assert (qhdr.src, qhdr.dst, qhdr.proto, qhdr.total_length) == (DST, SRC, 17, 128)
    assert first8.tobytes() == original[20:28]


def test_quoted_header_with_options_and_frag_needed_mtu():
    opts = bytes(IP(src="10.0.0.2", dst="10.0.0.1", options=[b"\x01\x01\x01\x00"]) / UDP())
    msg = build_dest_unreachable(FRAG_NEEDED, opts, mtu=1400)
    parsed = parse_icmp(msg)
    assert parsed.next_hop_mtu == 1400
    qhdr, first8 = parse_icmp_error(parsed)
    assert qhdr.header_len == 24 and first8.tobytes() == opts[24:32]


def test_time_exceeded_round_trip_and_scapy_errors():
    msg = build_error(TIME_EXCEEDED, 1, udp_packet())
    qhdr, _ = parse_icmp_error(parse_icmp(msg))
    assert qhdr.ident == 3
    ref = bytes(ICMP(type=11, code=0) / IP(src="10.9.9.9", dst="10.0.0.2") / UDP(sport=1, dport=2))
    qhdr, first8 = parse_icmp_error(parse_icmp(ref))
    assert qhdr.src == bytes([10, 9, 9, 9]) and first8[:4].tobytes() == b"\x00\x01\x00\x02"


def test_parse_icmp_error_rejects():
    echo = parse_icmp(build_echo(ECHO_REQUEST, 1, 1, bytes(40)))
    with pytest.raises(ParseError) as exc:
        parse_icmp_error(echo)
    assert exc.value.reason == "icmp_not_error"
    short = parse_icmp(build_dest_unreachable(1, udp_packet()[:24]))
    with pytest.raises(ParseError) as exc:
        parse_icmp_error(short)
    assert exc.value.reason == "icmp_short_quote"
    garbage = parse_icmp(build_dest_unreachable(1, b"\x65" + bytes(30)))
    with pytest.raises(ParseError) as exc:
        parse_icmp_error(garbage)
    assert exc.value.reason == "ip_bad_version"


def test_error_allowed_rules():
    pkt = udp_packet()
    hdr, payload = parse_ipv4(pkt)
    assert error_allowed(hdr, payload)
    assert not error_allowed(hdr, payload, dst_is_broadcast=True)

    def variant(src=DST, dst=SRC, proto=17, data=b"12345678", **kw):
        return parse_ipv4(build_ipv4_header(src, dst, proto, len(data), 1, **kw) + data)

    assert not error_allowed(*variant(dst=b"\xff\xff\xff\xff"))
    assert not error_allowed(*variant(dst=bytes([224, 0, 0, 1])))
    assert not error_allowed(*variant(src=b"\x00\x00\x00\x00"))
    assert not error_allowed(*variant(df=False, frag_offset=8))
    err = build_dest_unreachable(PORT_UNREACH, pkt)
    assert not error_allowed(*variant(proto=1, data=err))  # never an error about an error
    echo = build_echo(ECHO_REQUEST, 1, 1, b"")
    assert error_allowed(*variant(proto=1, data=echo))


def test_echo_request_as_a_ping_socket_sends_it():
    # What a program wrote (its own identifier, any checksum) leaves with the socket's
    # identifier and a correct checksum, the sequence number and data untouched.
    written = bytes([8, 0, 0xAB, 0xCD, 0x12, 0x34, 0x00, 0x07]) + b"data!"
    out = echo_request_as(written, 4242)
    msg = parse_icmp(out)  # (verifies the checksum)
    assert (msg.type, msg.code, msg.ident, msg.seq) == (ECHO_REQUEST, 0, 4242, 7)
    assert bytes(msg.payload) == b"data!"
    assert ICMP(out).id == 4242  # scapy reads it the same way
    for bad, reason in ((written[:7], "icmp_truncated"),
                        (bytes([0]) + written[1:], "icmp_not_echo_request"),
                        (written[:1] + bytes([1]) + written[2:], "icmp_not_echo_request")):
        with pytest.raises(ParseError) as e:
            echo_request_as(bad, 1)
        assert e.value.reason == reason
