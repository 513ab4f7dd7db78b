"""UDP (RFC 768) header format and checksum."""

from __future__ import annotations

import struct

from anp_async.proto.checksum import Buffer, fold, ones_sum, pseudo_header_sum
from anp_async.proto.errors import ParseError
from anp_async.proto.numbers import IPPROTO_UDP

HEADER_LEN = 8
MAX_PAYLOAD = 65535 - HEADER_LEN  # the Length field is 16 bits, header included

_HEADER = struct.Struct("!HHHH")
_unpack = _HEADER.unpack_from
_pack = _HEADER.pack


def parse_udp(
    buf: Buffer, src_ip: bytes, dst_ip: bytes, verify_checksum: bool = True
) -> tuple[int, int, memoryview]:
    """Parse a datagram into ``(src_port, dst_port, payload)``; the payload is a view.

    ``src_ip``/``dst_ip`` (from the IP header) enter the checksum via the pseudo header.
    Bytes after ``Length`` are ignored. ``ParseError`` reasons: ``udp_truncated``,
    ``udp_bad_length``, ``udp_bad_checksum``.
    """
    n = len(buf)
    if n < HEADER_LEN:
        raise ParseError("udp_truncated", f"{n} bytes")
    sport, dport, length, csum = _unpack(buf)
    if length < HEADER_LEN or length > n:
        raise ParseError("udp_bad_length", f"length {length}, {n} bytes")
    view = buf if type(buf) is memoryview else memoryview(buf)
    if length != n:
        view = view[:length]
    # RFC 768: an all-zero checksum means the sender computed none
    if verify_checksum and csum:
        total = pseudo_header_sum(src_ip, dst_ip, IPPROTO_UDP, length) + ones_sum(view)
        if fold(total) != 0xFFFF:
            raise ParseError("udp_bad_checksum")
    return sport, dport, view[HEADER_LEN:]


def build_udp_header(
    src_port: int, dst_port: int, src_ip: bytes, dst_ip: bytes, payload: Buffer
) -> bytes:
    """The 8-byte header for ``payload`` (sent after it), checksum included."""
    length = HEADER_LEN + len(payload)
    if length > 65535:
        raise ValueError(f"UDP payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    total = fold(
        pseudo_header_sum(src_ip, dst_ip, IPPROTO_UDP, length)
        + src_port
        + dst_port
        + length
        + ones_sum(payload)
    )
    # RFC 768: a computed checksum of zero is transmitted as all ones
    csum = (~total & 0xFFFF) or 0xFFFF
    return _pack(src_port, dst_port, length, csum)
