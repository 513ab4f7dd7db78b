"""ICMP for IPv4 (RFC 792, with the host rules of RFC 1122 (3.2.2)).

Echo (ping) and the error messages a host sends and must understand: Destination
Unreachable and Time Exceeded, whose payload quotes the offending datagram's header and
first 8 data bytes so the receiver can find the connection it belongs to.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from anp_async.proto.checksum import Buffer, fold, ones_sum
from anp_async.proto.errors import ParseError

from .ipv4 import IPv4Header, parse_ipv4_header
from .numbers import ETH_P_IP, IPPROTO_ICMP

ECHO_REPLY = 0
DEST_UNREACH = 3
SOURCE_QUENCH = 4
REDIRECT = 5
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12

# Destination Unreachable codes (RFC 792, RFC 1122 (3.2.2.1))
NET_UNREACH = 0
HOST_UNREACH = 1
PROTO_UNREACH = 2
PORT_UNREACH = 3
FRAG_NEEDED = 4
# Time Exceeded codes
TTL_EXCEEDED = 0
FRAG_TIME_EXCEEDED = 1

ERROR_TYPES = frozenset({DEST_UNREACH, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAMETER_PROBLEM})

HEADER_LEN = 8
QUOTE_DATA_LEN = 8  # RFC 792: "the internet header plus the first 64 bits of data"

_HEADER = struct.Struct("!BBHHH")
_unpack = _HEADER.unpack_from
_pack = _HEADER.pack


@dataclass(slots=True)
class IcmpMessage:
    """A parsed ICMP message.

    ``ident`` and ``seq`` are the two 16-bit halves of the "rest of header" word: the
    echo identifier and sequence number, or (for Fragmentation Needed) unused and the
    next-hop MTU (RFC 1191).
    """

    type: int
    code: int
    checksum: int
    ident: int
    seq: int
    payload: memoryview

    @property
    def rest(self) -> int:
        """The 32-bit word after the checksum."""
        return (self.ident << 16) | self.seq

    @property
    def next_hop_mtu(self) -> int:
        """RFC 1191: the MTU carried by a Fragmentation Needed message (0 if absent)."""
        return self.seq

    @property
    def is_error(self) -> bool:
        """True for error messages (which quote a datagram)."""
        return self.type in ERROR_TYPES


def parse_icmp(buf: Buffer, verify_checksum: bool = True) -> IcmpMessage:
    """Parse an ICMP message (the IPv4 payload). The payload is a view into ``buf``.

    ``ParseError`` reasons: ``icmp_truncated``, ``icmp_bad_checksum``.
    """
    if len(buf) < HEADER_LEN:
        raise ParseError("icmp_truncated", f"{len(buf)} bytes")
    # RFC 792: the checksum covers the whole ICMP message
    if verify_checksum and ones_sum(buf) != 0xFFFF:
        raise ParseError("icmp_bad_checksum")
    type_, code, csum, ident, seq = _unpack(buf)
    view = buf if type(buf) is memoryview else memoryview(buf)
    return IcmpMessage(type_, code, csum, ident, seq, view[HEADER_LEN:])


def build_icmp_header(type_: int, code: int, ident: int, seq: int, payload: Buffer) -> bytes:
    """The 8-byte header whose checksum covers itself and ``payload`` (sent after it)."""
    total = fold(((type_ << 8) | code) + ident + seq + ones_sum(payload))
    return _pack(type_, code, ~total & 0xFFFF, ident, seq)


def build_echo(type_: int, ident: int, seq: int, payload: Buffer) -> bytes:
    """A whole Echo (type 8) or Echo Reply (type 0) message."""
    return build_icmp_header(type_, 0, ident, seq, payload) + bytes(payload)


def build_echo_reply_from(request: IcmpMessage) -> bytes:
    """The Echo Reply to ``request``.

    RFC 792: "the data received in the echo message must be returned in the echo reply
    message", with the same identifier and sequence number.
    """
    return build_echo(ECHO_REPLY, request.ident, request.seq, request.payload)


# --------------------------------------------------------------- the echo fast path

# From the frame's start: Ethernet destination (the source MAC skipped), EtherType; IPv4
# version/IHL, total length, flags/fragment offset, protocol, source, destination; ICMP
# type and code (RFC 791 (3.1), RFC 792).
_ECHO_RX = struct.Struct("!6s6xHBxH2xHxB2x4s4sBB")
_IPV4_NO_OPTIONS = 0x45
_MF_OR_OFFSET = 0x3FFF
_ECHO_REQUEST_WORD = ECHO_REQUEST << 8  # type and code as the checksum's 16-bit word


def predict_echo_request(
    frame: bytes, off: int, mac: bytes, ip: bytes
) -> tuple[bytes, memoryview] | None:
    """Header prediction for ping: the frame (from byte ``off``) is an Echo Request to
    ``mac`` and ``ip`` in an unfragmented IPv4 datagram without options, both checksums
    right: (the sender's address, the ICMP message). None for anything else, which then
    takes the full way (and is counted there if something is wrong with it).
    """
    n = len(frame) - off
    # (the IPv4 protocol byte first: most frames that reach here are TCP or UDP)
    if n < _ECHO_RX.size + 6 or frame[off + 23] != IPPROTO_ICMP:
        return None
    dst_mac, ethertype, vihl, total, frag, proto, src, dst, type_, code = _ECHO_RX.unpack_from(
        frame, off
    )
    if (
        dst_mac != mac
        or ethertype != ETH_P_IP
        or vihl != _IPV4_NO_OPTIONS
        or proto != IPPROTO_ICMP
        or type_ != ECHO_REQUEST
        or code
        or dst != ip
        or frag & _MF_OR_OFFSET
        or not 28 <= total <= n - 14
    ):
        return None
    ip_at = off + 14
    # RFC 791 (3.1) and RFC 792: each checksum, summed with what it covers, is all ones.
    if ones_sum(frame[ip_at : ip_at + 20]) != 0xFFFF:
        return None
    message = memoryview(frame)[ip_at + 20 : ip_at + total]
    if ones_sum(message) != 0xFFFF:
        return None
    return src, message


def echo_reply_for(request: Buffer) -> bytes:
    """The Echo Reply to an Echo Request whose checksum is right: the same message with
    type 0 (RFC 792: same identifier, sequence number and data), its checksum updated
    for that one changed word without a pass over the data (RFC 1624 (3), eqn. 3:
    HC' = ~(~HC + ~m + m'), m the old type/code word, m' the new one, 0)."""
    old = (request[2] << 8) | request[3]
    new = ~fold((~old & 0xFFFF) + (~_ECHO_REQUEST_WORD & 0xFFFF)) & 0xFFFF
    rest = bytes(request[4:])
    if not new and not any(rest):
        # A reply of zeros only sums to +0, whose complement a sender writes as 0xffff
        # (a receiver's sum must come to all ones); the update cannot tell it from a sum
        # that is a non-zero multiple of 0xffff, whose checksum is 0.
        new = 0xFFFF
    return _pack(ECHO_REPLY, 0, new, 0, 0)[:4] + rest


def echo_request_as(message: Buffer, ident: int) -> bytes:
    """The echo request a program wrote to a ping socket (Linux's ICMP datagram sockets:
    ``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)``), as it leaves: the identifier is the
    socket's ``ident`` whatever the program put there, and the checksum is computed.

    ``ParseError`` reasons (the socket answers EINVAL): ``icmp_truncated`` under 8 bytes,
    ``icmp_not_echo_request`` for any other type or code (Linux sends only echo requests
    from such a socket).
    """
    if len(message) < HEADER_LEN:
        raise ParseError("icmp_truncated", f"{len(message)} bytes")
    type_, code, _csum, _ident, seq = _unpack(message)
    if type_ != ECHO_REQUEST or code != 0:
        raise ParseError("icmp_not_echo_request", f"type {type_} code {code}")
    return build_echo(ECHO_REQUEST, ident, seq, memoryview(message)[HEADER_LEN:])


def build_error(type_: int, code: int, original_ip_packet: Buffer, rest: int = 0) -> bytes:
    """An error message quoting the start of ``original_ip_packet``.

    The quote is the original IP header plus the first 8 data bytes (RFC 792); a quote
    shorter than that is sent as it is.
    """
    original = memoryview(original_ip_packet)
    ihl = (original[0] & 0x0F) * 4 if len(original) else 0
    quote = original[: ihl + QUOTE_DATA_LEN]
    return build_icmp_header(type_, code, rest >> 16, rest & 0xFFFF, quote) + bytes(quote)


def build_dest_unreachable(code: int, original_ip_packet: Buffer, mtu: int = 0) -> bytes:
    """Destination Unreachable (e.g. code ``PORT_UNREACH`` for a closed UDP port).

    ``mtu`` is the next-hop MTU, sent with code ``FRAG_NEEDED`` (RFC 1191).
    """
    return build_error(DEST_UNREACH, code, original_ip_packet, mtu & 0xFFFF)


def parse_icmp_error(msg: IcmpMessage) -> tuple[IPv4Header, memoryview]:
    """The quoted datagram's header and first 8 transport bytes of an error message.

    RFC 1122 (3.2.2): the quote is what lets the receiver hand the error to the
    transport (ports of UDP and TCP are in those 8 bytes). ``ParseError`` reasons:
    ``icmp_not_error``, ``icmp_short_quote`` and those of the quoted IPv4 header.
    """
    if msg.type not in ERROR_TYPES:
        raise ParseError("icmp_not_error", str(msg.type))
    quoted = msg.payload
    # the quote's Total Length describes the original, longer datagram; and the header
    # checksum is not checked, routers quote it after changing the TTL
    hdr = parse_ipv4_header(quoted, verify_checksum=False)
    data = quoted[hdr.header_len : hdr.header_len + QUOTE_DATA_LEN]
    if len(data) < QUOTE_DATA_LEN:
        raise ParseError("icmp_short_quote", f"{len(data)} bytes")
    return hdr, data


def error_allowed(hdr: IPv4Header, payload: Buffer, dst_is_broadcast: bool = False) -> bool:
    """May an ICMP error be sent about this received datagram? (RFC 1122 (3.2.2))

    Not about an ICMP error message, a datagram to a broadcast or multicast address, a
    fragment other than the first, or one whose source does not name a single host.
    """
    if dst_is_broadcast or 224 <= hdr.dst[0] <= 239 or hdr.dst == b"\xff\xff\xff\xff":
        return False
    if hdr.frag_offset:
        return False
    src = hdr.src
    if src[0] == 0 or src[0] == 127 or src[0] >= 224:
        return False
    if hdr.proto == IPPROTO_ICMP and (len(payload) < 1 or payload[0] in ERROR_TYPES):
        return False
    return True
