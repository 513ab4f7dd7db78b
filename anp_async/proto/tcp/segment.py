"""TCP segment format (RFC 9293 3.1) and options (MSS, window scale, SACK, timestamps).

``parse_tcp`` validates a received segment (length fields, data offset, option lengths,
checksum) and returns a ``TcpSegment`` whose payload is a memoryview of the input (no copy).
``build_tcp_header`` emits header + options with the checksum computed over pseudo header,
header and payload, so the glue can send ``[ip_header, tcp_header, payload]`` by writev.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..checksum import fold, ones_sum, pseudo_header_sum, verify_transport
from ..errors import ParseError
from ..numbers import IPPROTO_TCP

__all__ = [
    "FIN",
    "SYN",
    "RST",
    "PSH",
    "ACK",
    "URG",
    "ECE",
    "CWR",
    "NOT_ECT",
    "ECT_1",
    "ECT_0",
    "CE",
    "TcpOptions",
    "TcpSegment",
    "parse_tcp",
    "parse_options",
    "build_options",
    "build_tcp_header",
    "build_tcp_header_partial",
    "build_tcp",
    "flags_str",
]

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

# RFC 3168 (5): the ECN codepoints of the IP header's two low TOS bits.
NOT_ECT = 0
ECT_1 = 1
ECT_0 = 2
CE = 3

HEADER_LEN = 20
MAX_OPTIONS_LEN = 40

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8

# RFC 7323 (2.3): a shift count above 14 is treated as 14.
MAX_WSCALE = 14

_HDR = struct.Struct("!HHIIBBHHH")
_U16 = struct.Struct("!H")
_TS = struct.Struct("!II")
_SACK_BLOCK = struct.Struct("!II")
# The layout almost every data segment carries (RFC 7323 Appendix A): NOP NOP TS.
_TS_ONLY_PREFIX = b"\x01\x01\x08\x0a"
_TS_ONLY = struct.Struct("!4xII")
# Header followed by NOP NOP TS (as one 32-bit word) TSval TSecr: 32 bytes in one pack.
_HDR_TS = struct.Struct("!HHIIBBHHHIII")
_TS_ONLY_WORD = 0x0101080A


@dataclass(slots=True)
class TcpOptions:
    """The TCP options this stack understands; unknown options are skipped on parse."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamp: tuple[int, int] | None = None  # (TSval, TSecr)


@dataclass(slots=True)
class TcpSegment:
    """One TCP segment; ``window`` is the raw 16-bit header field (unscaled)."""

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes | memoryview = b""
    options: TcpOptions | None = None
    urg: int = 0
    # RFC 3168 (5): the ECN field of the IP header that carries (or carried) the segment:
    # 0 Not-ECT, ECT_1, ECT_0, CE. Not part of the TCP header; the IP layer sets/reads it.
    ecn: int = 0

    @property
    def seg_len(self) -> int:
        """RFC 9293 (3.4): sequence space occupied, payload plus SYN and FIN."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN)

    def has(self, flag: int) -> bool:
        """True if every bit of ``flag`` is set."""
        return self.flags & flag == flag

    def __repr__(self) -> str:
        opt = f", opts={self.options}" if self.options is not None else ""
        return (
            f"TcpSegment({self.src_port}->{self.dst_port} {flags_str(self.flags)} "
            f"seq={self.seq} ack={self.ack} win={self.window} len={len(self.payload)}{opt})"
        )


def flags_str(flags: int) -> str:
    """Short tcpdump-like flag string, e.g. 'SA' or 'FPA'."""
    out = []
    for bit, ch in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "A"), (URG, "U"),
                    (ECE, "E"), (CWR, "W")):  # fmt: skip
        if flags & bit:
            out.append(ch)
    return "".join(out) or "."


def parse_options(opts: bytes | memoryview) -> TcpOptions:
    """Parse the option bytes of a header; ParseError('tcp_bad_option') if malformed."""
    n = len(opts)
    if n == 12 and opts[:4] == _TS_ONLY_PREFIX:
        return TcpOptions(timestamp=_TS_ONLY.unpack_from(opts))
    out = TcpOptions()
    i = 0
    while i < n:
        kind = opts[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise ParseError("tcp_bad_option", f"kind {kind} without length")
        length = opts[i + 1]
        if length < 2 or i + length > n:
            raise ParseError("tcp_bad_option", f"kind {kind} length {length}")
        if kind == OPT_MSS:
            if length != 4:
                raise ParseError("tcp_bad_option", "mss length")
            out.mss = _U16.unpack_from(opts, i + 2)[0]
        elif kind == OPT_WSCALE:
            if length != 3:
                raise ParseError("tcp_bad_option", "wscale length")
            out.wscale = min(opts[i + 2], MAX_WSCALE)
        elif kind == OPT_SACK_PERM:
            if length != 2:
                raise ParseError("tcp_bad_option", "sack-permitted length")
            out.sack_permitted = True
        elif kind == OPT_SACK:
            if (length - 2) % 8 or length == 2:
                raise ParseError("tcp_bad_option", "sack length")
            out.sack_blocks = tuple(
                _SACK_BLOCK.unpack_from(opts, j) for j in range(i + 2, i + length, 8)
            )
        elif kind == OPT_TIMESTAMP:
            if length != 10:
                raise ParseError("tcp_bad_option", "timestamp length")
            out.timestamp = _TS.unpack_from(opts, i + 2)
        # RFC 9293 (3.2): unknown options are skipped by their length.
        i += length
    return out


def parse_tcp(
    buf: bytes | bytearray | memoryview,
    src_ip: bytes,
    dst_ip: bytes,
    verify_checksum: bool = True,
) -> TcpSegment:
    """Parse and validate one TCP segment (header + payload, as carried by IP)."""
    n = len(buf)
    if n < HEADER_LEN:
        raise ParseError("tcp_truncated", f"{n} bytes")
    sport, dport, seq, ack, off_byte, flags, window, _csum, urg = _HDR.unpack_from(buf)
    off = (off_byte >> 4) << 2
    if off < HEADER_LEN or off > n:
        raise ParseError("tcp_bad_offset", f"data offset {off}, segment {n}")
    if verify_checksum and not verify_transport(src_ip, dst_ip, IPPROTO_TCP, buf):
        raise ParseError("tcp_bad_checksum")
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    options = parse_options(mv[HEADER_LEN:off]) if off > HEADER_LEN else None
    # Positional, in header order: this runs for every segment received.
    return TcpSegment(sport, dport, seq, ack, flags, window, mv[off:], options, urg)


def build_options(o: TcpOptions) -> bytes:
    """Encode options in Linux's order, NOP-aligned to 4 bytes (at most 40; SACK blocks cut)."""
    ts = o.timestamp
    if ts is not None and o.mss is None and o.wscale is None and not o.sack_permitted:
        if not o.sack_blocks:
            return _TS_ONLY_PREFIX + _TS.pack(ts[0], ts[1])
    parts = []
    if o.mss is not None:
        parts.append(b"\x02\x04" + _U16.pack(o.mss & 0xFFFF))
    if o.sack_permitted and ts is not None:
        parts.append(b"\x04\x02\x08\x0a" + _TS.pack(ts[0], ts[1]))
    elif ts is not None:
        parts.append(_TS_ONLY_PREFIX + _TS.pack(ts[0], ts[1]))
    elif o.sack_permitted:
        parts.append(b"\x01\x01\x04\x02")
    if o.wscale is not None:
        parts.append(b"\x01\x03\x03" + bytes((min(o.wscale, MAX_WSCALE),)))
    if o.sack_blocks:
        used = sum(len(p) for p in parts)
        room = (MAX_OPTIONS_LEN - used - 4) // 8
        blocks = o.sack_blocks[: max(0, room)]
        if blocks:
            parts.append(bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks))))
            parts.extend(_SACK_BLOCK.pack(a & 0xFFFFFFFF, b & 0xFFFFFFFF) for a, b in blocks)
    return b"".join(parts)


def build_tcp_header(seg: TcpSegment, src_ip: bytes, dst_ip: bytes, checksum: bool = True) -> bytes:
    """Header + options of ``seg``; checksum over pseudo header, header and payload.

    With ``checksum=False`` the field is left 0 (for checksum offload).
    """
    if checksum:
        # The partial header already holds the pseudo-header sum in the checksum field,
        # so one ones' complement sum over it and the payload (which starts at an even
        # offset) covers pseudo header, header and payload (RFC 1071 (2)); the field then
        # gets the inverse. Two C-level sums instead of building the header twice.
        part = build_tcp_header_partial(seg, src_ip, dst_ip)
        payload = seg.payload
        total = ones_sum(part) + ones_sum(payload) if payload else ones_sum(part)
        hdr = bytearray(part)
        _U16.pack_into(hdr, 16, ~fold(total) & 0xFFFF)
        return bytes(hdr)
    opts = build_options(seg.options) if seg.options is not None else b""
    off = HEADER_LEN + len(opts)
    hdr = bytearray(off)
    _HDR.pack_into(
        hdr,
        0,
        seg.src_port,
        seg.dst_port,
        seg.seq & 0xFFFFFFFF,
        seg.ack & 0xFFFFFFFF,
        (off >> 2) << 4,
        seg.flags & 0xFF,
        seg.window & 0xFFFF,
        0,
        seg.urg & 0xFFFF,
    )
    if opts:
        hdr[HEADER_LEN:] = opts
    return bytes(hdr)


def build_tcp_header_partial(seg: TcpSegment, src_ip: bytes, dst_ip: bytes) -> bytes:
    """Header + options of ``seg`` for checksum offload: the checksum field holds the
    folded pseudo-header sum over the whole segment length (not inverted), which the NIC
    completes by summing from the TCP header to the end (a "partial" checksum, as Linux
    hands to a NIC with NETIF_F_HW_CSUM; for a TSO super-segment it fixes up the length).
    """
    o = seg.options
    plen = len(seg.payload)
    if (
        o is not None
        and o.timestamp is not None
        and o.mss is None
        and o.wscale is None
        and not o.sack_permitted
        and not o.sack_blocks
    ):
        ts = o.timestamp
        return _HDR_TS.pack(
            seg.src_port,
            seg.dst_port,
            seg.seq & 0xFFFFFFFF,
            seg.ack & 0xFFFFFFFF,
            (32 >> 2) << 4,
            seg.flags & 0xFF,
            seg.window & 0xFFFF,
            pseudo_header_sum(src_ip, dst_ip, IPPROTO_TCP, 32 + plen),
            seg.urg & 0xFFFF,
            _TS_ONLY_WORD,
            ts[0] & 0xFFFFFFFF,
            ts[1] & 0xFFFFFFFF,
        )
    opts = build_options(o) if o is not None else b""
    off = HEADER_LEN + len(opts)
    return (
        _HDR.pack(
            seg.src_port,
            seg.dst_port,
            seg.seq & 0xFFFFFFFF,
            seg.ack & 0xFFFFFFFF,
            (off >> 2) << 4,
            seg.flags & 0xFF,
            seg.window & 0xFFFF,
            pseudo_header_sum(src_ip, dst_ip, IPPROTO_TCP, off + plen),
            seg.urg & 0xFFFF,
        )
        + opts
    )


def build_tcp(seg: TcpSegment, src_ip: bytes, dst_ip: bytes) -> bytes:
    """The whole segment as one bytes object (tests and tools; the data path uses writev)."""
    return build_tcp_header(seg, src_ip, dst_ip) + bytes(seg.payload)
