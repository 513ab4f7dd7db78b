"""ICMPv6 (RFC 4443): message format with the pseudo-header checksum, echo, errors.

Neighbor Discovery (RFC 4861) is ICMPv6 too; its messages live in :mod:`nd`. The MLD
messages the kernel sends (RFC 2710/3810) are recognised here so the stack can ignore
them by name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from anp_async.proto.checksum import Buffer, fold, ones_sum, pseudo_header_sum
from anp_async.proto.errors import ParseError

from .ipv6 import (
    HEADER_LEN as IP6_HEADER_LEN,
)
from .ipv6 import (
    MIN_MTU,
    NH_ICMPV6,
    IPv6Header,
    is_multicast,
    parse_ipv6_header,
    walk_extensions,
)

# Error messages (RFC 4443 (3))
DEST_UNREACH = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAM_PROBLEM = 4
# Informational messages (RFC 4443 (4))
ECHO_REQUEST = 128
ECHO_REPLY = 129
# MLD (RFC 2710, RFC 3810)
MLD_QUERY = 130
MLD_REPORT = 131
MLD_DONE = 132
MLD2_REPORT = 143
MLD_TYPES = frozenset({MLD_QUERY, MLD_REPORT, MLD_DONE, MLD2_REPORT})
# Neighbor Discovery (RFC 4861 (4))
ROUTER_SOLICIT = 133
ROUTER_ADVERT = 134
NEIGHBOR_SOLICIT = 135
NEIGHBOR_ADVERT = 136
REDIRECT = 137
ND_TYPES = frozenset({ROUTER_SOLICIT, ROUTER_ADVERT, NEIGHBOR_SOLICIT, NEIGHBOR_ADVERT, REDIRECT})

# Destination Unreachable codes (RFC 4443 (3.1))
NO_ROUTE = 0
ADMIN_PROHIBITED = 1
BEYOND_SCOPE = 2
ADDR_UNREACH = 3
PORT_UNREACH = 4
# Time Exceeded codes (RFC 4443 (3.3))
HOP_LIMIT_EXCEEDED = 0
FRAG_TIME_EXCEEDED = 1

HEADER_LEN = 8
_HEADER = struct.Struct("!BBHI")
_unpack = _HEADER.unpack_from
_pack = _HEADER.pack


@dataclass(slots=True)
class Icmpv6Message:
    """A parsed ICMPv6 message. ``rest`` is the 32-bit word after the checksum (echo
    identifier and sequence, MTU, pointer, or ND flags); ``body`` what follows it."""

    type: int
    code: int
    checksum: int
    rest: int
    body: memoryview

    @property
    def ident(self) -> int:
        """Echo identifier (high half of ``rest``)."""
        return self.rest >> 16

    @property
    def seq(self) -> int:
        """Echo sequence number (low half of ``rest``)."""
        return self.rest & 0xFFFF

    @property
    def is_error(self) -> bool:
        """RFC 4443 (2.1): types 0..127 are errors."""
        return self.type < 128


def parse_icmpv6(
    buf: Buffer, src: bytes, dst: bytes, verify_checksum: bool = True
) -> Icmpv6Message:
    """Parse an ICMPv6 message (the upper-layer payload of an IPv6 packet).

    ``ParseError`` reasons: ``icmp6_truncated``, ``icmp6_bad_checksum``.
    """
    n = len(buf)
    if n < HEADER_LEN:
        raise ParseError("icmp6_truncated", f"{n} bytes")
    # RFC 4443 (2.3): the checksum covers the IPv6 pseudo-header (RFC 8200 (8.1)) too
    if (
        verify_checksum
        and fold(pseudo_header_sum(src, dst, NH_ICMPV6, n) + ones_sum(buf)) != 0xFFFF
    ):
        raise ParseError("icmp6_bad_checksum")
    type_, code, csum, rest = _unpack(buf)
    view = buf if type(buf) is memoryview else memoryview(buf)
    return Icmpv6Message(type_, code, csum, rest, view[HEADER_LEN:])


def build_icmpv6(type_: int, code: int, rest: int, body: Buffer, src: bytes, dst: bytes) -> bytes:
    """A whole ICMPv6 message from ``src`` to ``dst``, checksum filled in."""
    length = HEADER_LEN + len(body)
    total = fold(
        pseudo_header_sum(src, dst, NH_ICMPV6, length)
        + ((type_ << 8) | code)
        + (rest >> 16)
        + (rest & 0xFFFF)
        + ones_sum(body)
    )
    return _pack(type_, code, ~total & 0xFFFF, rest) + bytes(body)


def echo_request_as(message: Buffer, ident: int, src: bytes, dst: bytes) -> bytes:
    """The echo request a program wrote to an ICMPv6 ping socket (``socket(AF_INET6,
    SOCK_DGRAM, IPPROTO_ICMPV6)``), as it leaves from ``src`` to ``dst``: the identifier
    is the socket's ``ident``, the checksum computed (pseudo-header included).

    ``ParseError`` reasons (the socket answers EINVAL): ``icmp6_truncated`` under 8
    bytes, ``icmp6_not_echo_request`` for any other type or code.
    """
    if len(message) < HEADER_LEN:
        raise ParseError("icmp6_truncated", f"{len(message)} bytes")
    type_, code, _csum, rest = _unpack(message)
    if type_ != ECHO_REQUEST or code != 0:
        raise ParseError("icmp6_not_echo_request", f"type {type_} code {code}")
    body = memoryview(message)[HEADER_LEN:]
    return build_icmpv6(ECHO_REQUEST, 0, (ident << 16) | (rest & 0xFFFF), body, src, dst)


def build_echo_reply_from(request: Icmpv6Message, src: bytes, dst: bytes) -> bytes:
    """The Echo Reply to ``request``: same identifier, sequence and data (RFC 4443 (4.2))."""
    return build_icmpv6(ECHO_REPLY, 0, request.rest, request.body, src, dst)


def build_error(
    type_: int, code: int, original: Buffer, src: bytes, dst: bytes, rest: int = 0
) -> bytes:
    """An error message quoting as much of ``original`` as fits in the minimum MTU.

    RFC 4443 (2.4 c): the message must not exceed 1280 octets with its IPv6 header.
    ``rest`` is the MTU (Packet Too Big) or pointer (Parameter Problem).
    """
    quote = memoryview(original)[: MIN_MTU - IP6_HEADER_LEN - HEADER_LEN]
    return build_icmpv6(type_, code, rest, quote, src, dst)


def parse_error(msg: Icmpv6Message) -> tuple[IPv6Header, memoryview]:
    """The quoted packet's header and its upper-layer bytes (at most 8) of an error.

    The quoted extension headers are walked to find the upper layer (ports of UDP and
    TCP are in its first 8 bytes). ``ParseError`` reasons: ``icmp6_not_error``,
    ``icmp6_short_quote`` and those of the quoted header.
    """
    if not msg.is_error:
        raise ParseError("icmp6_not_error", str(msg.type))
    quoted = msg.body
    hdr = parse_ipv6_header(quoted)
    proto, offset, frag = walk_extensions(quoted, hdr.next_header, IP6_HEADER_LEN)
    if frag is not None and frag.offset != 0:
        raise ParseError("icmp6_short_quote", "quotes a later fragment")
    data = quoted[offset : offset + 8]
    if len(data) < 8:
        raise ParseError("icmp6_short_quote", f"{len(data)} bytes")
    hdr.proto = proto
    hdr.header_len = offset
    return hdr, data


def error_allowed(
    hdr: IPv6Header,
    payload: Buffer,
    error_type: int,
    link_multicast: bool = False,
    multicast_ok: bool = False,
) -> bool:
    """May an ICMPv6 error of ``error_type`` be sent about this received packet?

    RFC 4443 (2.4 e): never about an ICMPv6 error or a Redirect; never to a packet sent
    to a multicast address or as link-layer multicast/broadcast, except Packet Too Big
    and Parameter Problem code 2 for an option (``multicast_ok``); never to a source
    that does not name a single node (unspecified or multicast).
    """
    if hdr.proto == NH_ICMPV6 and (len(payload) < 1 or payload[0] < 128 or payload[0] == REDIRECT):
        return False
    if is_multicast(hdr.dst) or link_multicast:
        if not (error_type == PACKET_TOO_BIG or multicast_ok):
            return False
    src = hdr.src
    if src == bytes(16) or is_multicast(src):
        return False
    return True


class RateLimiter:
    """A token bucket for the ICMPv6 errors a node originates (RFC 4443 (2.4 f)).

    ``rate`` messages per second with bursts of ``burst``; time is passed in.
    """

    __slots__ = ("rate", "burst", "_tokens", "_last")

    def __init__(self, rate: float = 100.0, burst: int = 10) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = 0.0

    def allow(self, now: float) -> bool:
        """Take a token if one is there."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
