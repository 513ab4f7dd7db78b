"""IPv6 (RFC 8200): header format, extension headers, fragments, addresses.

Addresses are 16-byte ``bytes`` everywhere; :func:`ip6_to_bytes` / :func:`ip6_to_str`
convert at the edges. A received packet is parsed in two steps: :func:`parse_ipv6` reads
the fixed header and walks the extension headers up to the upper-layer header or to a
Fragment header (what follows a Fragment header can only be read once the packet is
reassembled, RFC 8200 (4.5)); :class:`Reassembler6` puts fragments together and
:func:`walk_extensions` then walks what follows.
"""

from __future__ import annotations

import ipaddress
import struct
from bisect import bisect_left
from dataclasses import dataclass

from anp_async.counters import Counters
from anp_async.proto.checksum import Buffer
from anp_async.proto.errors import ParseError

HEADER_LEN = 40
MIN_MTU = 1280  # RFC 8200 (5): every link carries 1280-octet packets unfragmented
MAX_PAYLOAD = 65535  # Payload Length is 16 bits (jumbograms, RFC 2675, are not spoken)

# Next Header values (IANA); the upper-layer ones are in numbers.py
NH_HOPOPTS = 0
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_ESP = 50
NH_AH = 51
NH_ICMPV6 = 58
NH_NONE = 59
NH_DSTOPTS = 60
EXTENSION_HEADERS = frozenset({NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_DSTOPTS})

# Parameter Problem codes (RFC 4443 (3.4)) carried by ParamProblem
PP_HEADER_FIELD = 0
PP_NEXT_HEADER = 1
PP_OPTION = 2

ANY = bytes(16)
LOOPBACK = bytes(15) + b"\x01"
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")

_HEADER = struct.Struct("!IHBB16s16s")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack
_FRAG = struct.Struct("!BBHI")


class ParamProblem(ParseError):
    """A malformed packet that deserves an ICMPv6 Parameter Problem (RFC 8200 (4)).

    ``code`` is one of ``PP_*``; ``pointer`` is the offset of the offending octet from
    the start of the IPv6 header. ``multicast_ok``: the error may be sent even if the
    destination was multicast (option action 10, RFC 8200 (4.2)).
    """

    def __init__(self, reason: str, code: int, pointer: int, multicast_ok: bool = False) -> None:
        super().__init__(reason, f"code {code} pointer {pointer}")
        self.code = code
        self.pointer = pointer
        self.multicast_ok = multicast_ok


def ip6_to_bytes(ip: str | bytes) -> bytes:
    """``"fd00::2"`` to 16 bytes; 16-byte ``bytes`` pass through unchanged."""
    if isinstance(ip, bytes | bytearray):
        if len(ip) != 16:
            raise ValueError(f"IPv6 address must be 16 bytes, got {len(ip)}")
        return bytes(ip)
    try:
        return ipaddress.IPv6Address(ip.split("%", 1)[0]).packed
    except ValueError:
        raise ValueError(f"invalid IPv6 address {ip!r}") from None


def ip6_to_str(ip: Buffer) -> str:
    """16 bytes to the compressed text form (RFC 5952)."""
    return ipaddress.IPv6Address(bytes(ip)).compressed


def is_multicast(ip: bytes) -> bool:
    """ff00::/8 (RFC 4291 (2.7))."""
    return ip[0] == 0xFF


def is_link_local(ip: bytes) -> bool:
    """fe80::/10 (RFC 4291 (2.5.6))."""
    return ip[0] == 0xFE and ip[1] & 0xC0 == 0x80


def solicited_node(ip: bytes) -> bytes:
    """The solicited-node multicast group of ``ip``: ff02::1:ff00:0/104 (RFC 4291 (2.7.1))."""
    return bytes.fromhex("ff0200000000000000000001ff") + ip[13:]


def multicast_mac(ip: bytes) -> bytes:
    """The Ethernet address of an IPv6 multicast group: 33:33 and the low 32 bits (RFC 2464 (7))."""
    return b"\x33\x33" + ip[12:]


def link_local_from_mac(mac: bytes) -> bytes:
    """fe80::/64 with the modified EUI-64 interface identifier of ``mac`` (RFC 4291 (2.5.1))."""
    eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:]
    return b"\xfe\x80" + bytes(6) + eui


def prefix_match(a: bytes, b: bytes, prefix_len: int) -> bool:
    """True if ``a`` and ``b`` share their first ``prefix_len`` bits."""
    shift = 128 - prefix_len
    return int.from_bytes(a, "big") >> shift == int.from_bytes(b, "big") >> shift


@dataclass(slots=True)
class Fragment:
    """The Fragment header's fields (RFC 8200 (4.5)); ``offset`` in bytes."""

    next_header: int
    offset: int
    more: bool
    ident: int
    #: where the Fragment header starts, counted from the IPv6 header
    header_offset: int


@dataclass(slots=True)
class IPv6Header:
    """A parsed IPv6 packet's headers.

    ``proto`` is the upper-layer protocol found after the extension headers (NH_NONE if
    there is none); ``header_len`` the bytes from the start of the packet to it.
    ``fragment`` is set when a Fragment header stopped the walk.
    """

    traffic_class: int
    flow_label: int
    payload_length: int
    next_header: int
    hop_limit: int
    src: bytes
    dst: bytes
    proto: int = NH_NONE
    header_len: int = HEADER_LEN
    fragment: Fragment | None = None
    #: offset of the Next Header field that names ``proto`` (6, or the start of the last
    #: extension header): where a Parameter Problem about it points (RFC 4443 (3.4))
    nh_offset: int = 6

    @property
    def is_fragment(self) -> bool:
        """True when a Fragment header that is not atomic was found (RFC 6946)."""
        frag = self.fragment
        return frag is not None and (frag.more or frag.offset != 0)

    @property
    def total_length(self) -> int:
        """The packet's length, fixed header included (as IPv4's Total Length)."""
        return HEADER_LEN + self.payload_length


def parse_ipv6_header(buf: Buffer) -> IPv6Header:
    """Parse only the 40-byte fixed header (version checked, lengths not).

    This is what parses the packet quoted in an ICMPv6 error, which is cut short.
    ``ParseError`` reasons: ``ip6_truncated``, ``ip6_bad_version``.
    """
    n = len(buf)
    if n < HEADER_LEN:
        raise ParseError("ip6_truncated", f"{n} bytes")
    vtf, plen, nh, hlim, src, dst = _unpack_header(buf)
    if vtf >> 28 != 6:
        raise ParseError("ip6_bad_version", str(vtf >> 28))
    return IPv6Header((vtf >> 20) & 0xFF, vtf & 0xFFFFF, plen, nh, hlim, src, dst, nh)


def _options(buf: memoryview, start: int, end: int, hop_by_hop: bool, dst_multicast: bool) -> None:
    """Check the TLV options of a Hop-by-Hop or Destination Options header (RFC 8200 (4.2))."""
    i = start
    while i < end:
        kind = buf[i]
        if kind == 0:  # Pad1
            i += 1
            continue
        if i + 2 > end:
            raise ParamProblem("ip6_bad_option", PP_HEADER_FIELD, i)
        length = buf[i + 1]
        if i + 2 + length > end:
            raise ParamProblem("ip6_bad_option", PP_HEADER_FIELD, i + 1)
        # PadN (1) anywhere; Router Alert (5, RFC 2711) in Hop-by-Hop, sent with MLD
        if kind != 1 and not (hop_by_hop and kind == 5):
            # RFC 8200 (4.2): the two high bits say what to do with an unknown option
            action = kind >> 6
            if action == 1:
                raise ParseError("ip6_unknown_option_discard", str(kind))
            if action == 2 or (action == 3 and not dst_multicast):
                raise ParamProblem("ip6_unknown_option", PP_OPTION, i, multicast_ok=action == 2)
            if action == 3:
                raise ParseError("ip6_unknown_option_discard", str(kind))
        i += 2 + length


def walk_extensions(
    buf: Buffer, next_header: int, offset: int, dst_multicast: bool = False
) -> tuple[int, int, Fragment | None]:
    """Walk extension headers from ``offset`` in ``buf`` (``next_header`` names the first).

    Returns ``(proto, offset_of_upper_layer, fragment)``: stops at the first header that
    is not an extension header, or at a Fragment header (``fragment`` set, the offset just
    after it). Offsets in errors are from the start of ``buf``, which must begin with the
    IPv6 header. Raises ``ParamProblem`` where RFC 8200 wants one sent, else ``ParseError``.
    """
    proto, upper, frag, _nh_at = _walk(buf, next_header, offset, dst_multicast)
    return proto, upper, frag


def _walk(
    buf: Buffer, next_header: int, offset: int, dst_multicast: bool
) -> tuple[int, int, Fragment | None, int]:
    """:func:`walk_extensions`, also giving the offset of the last Next Header field."""
    view = buf if type(buf) is memoryview else memoryview(buf)
    n = len(view)
    nh = next_header
    prev_nh_at = 6  # offset of the Next Header field that named the current header
    while nh in EXTENSION_HEADERS:
        if nh == NH_HOPOPTS and offset != HEADER_LEN:
            # RFC 8200 (4.1): Hop-by-Hop Options only directly after the IPv6 header
            raise ParamProblem("ip6_hopopts_not_first", PP_NEXT_HEADER, prev_nh_at)
        if nh == NH_FRAGMENT:
            if offset + 8 > n:
                raise ParseError("ip6_truncated", "fragment header")
            fnh, _res, off_m, ident = _FRAG.unpack_from(view, offset)
            frag = Fragment(fnh, off_m & 0xFFF8, bool(off_m & 1), ident, offset)
            return fnh, offset + 8, frag, offset
        if offset + 8 > n:
            raise ParseError("ip6_truncated", f"extension header {nh}")
        length = (view[offset + 1] + 1) * 8
        if offset + length > n:
            raise ParseError("ip6_truncated", f"extension header {nh} of {length} bytes")
        if nh == NH_ROUTING:
            # RFC 8200 (4.4): an unknown routing type with segments left is an error;
            # with none left the header is ignored. Type 0 is deprecated (RFC 5095).
            if view[offset + 3] != 0:
                raise ParamProblem("ip6_routing_header", PP_HEADER_FIELD, offset + 2)
        else:
            _options(view, offset + 2, offset + length, nh == NH_HOPOPTS, dst_multicast)
        prev_nh_at = offset
        nh = view[offset]
        offset += length
    return nh, offset, None, prev_nh_at


def parse_ipv6(buf: Buffer) -> tuple[IPv6Header, memoryview]:
    """Parse a packet into ``(header, upper-layer payload)``; the payload is a view.

    The Payload Length is checked against the buffer and the view trimmed to it (drops
    Ethernet padding). For a fragment the payload is the fragment's data (what follows
    the Fragment header). ``ParseError`` reasons: ``ip6_truncated``, ``ip6_bad_version``,
    ``ip6_bad_length``, ``ip6_bad_fragment`` and those of :func:`walk_extensions`.
    """
    hdr = parse_ipv6_header(buf)
    end = HEADER_LEN + hdr.payload_length
    n = len(buf)
    if end > n:
        raise ParseError("ip6_bad_length", f"payload length {hdr.payload_length}, {n} bytes")
    view = buf if type(buf) is memoryview else memoryview(buf)
    if end != n:
        view = view[:end]
    if hdr.payload_length == 0 and hdr.next_header == NH_HOPOPTS:
        # a jumbogram (RFC 2675) or nonsense: neither is spoken here
        raise ParseError("ip6_bad_length", "jumbogram")
    proto, offset, frag, nh_at = _walk(view, hdr.next_header, HEADER_LEN, is_multicast(hdr.dst))
    if frag is not None:
        data_len = end - offset
        # RFC 8200 (4.5): every fragment but the last holds a multiple of 8 octets
        if frag.more and (data_len == 0 or data_len & 7):
            raise ParamProblem("ip6_bad_fragment", PP_HEADER_FIELD, 4)
        # ... and the reassembled packet fits a 16-bit Payload Length
        if frag.offset + data_len + offset - HEADER_LEN - 8 > MAX_PAYLOAD:
            raise ParamProblem("ip6_bad_fragment", PP_HEADER_FIELD, frag.header_offset + 2)
    hdr.proto = proto
    hdr.header_len = offset
    hdr.fragment = frag
    hdr.nh_offset = nh_at
    return hdr, view[offset:]


def build_ipv6_header(
    src: bytes,
    dst: bytes,
    next_header: int,
    payload_len: int,
    hop_limit: int = 64,
    traffic_class: int = 0,
    flow_label: int = 0,
) -> bytes:
    """The 40-byte fixed header (IPv6 has no header checksum, RFC 8200 (3))."""
    if payload_len > MAX_PAYLOAD:
        raise ValueError(f"payload of {payload_len} bytes exceeds {MAX_PAYLOAD}")
    vtf = (6 << 28) | (traffic_class << 20) | flow_label
    return _pack_header(vtf, payload_len, next_header, hop_limit, src, dst)


def fragment6(
    payload: Buffer,
    mtu: int,
    src: bytes,
    dst: bytes,
    next_header: int,
    ident: int,
    hop_limit: int = 64,
    traffic_class: int = 0,
) -> list[tuple[bytes, memoryview]]:
    """Headers and payload views for sending ``payload`` (upper-layer header and data).

    A packet that fits goes whole. One that does not is cut by the source (RFC 8200
    (4.5): only the source fragments) into pieces of a multiple of 8 octets, each after
    an IPv6 header and a Fragment header; every piece carries ``traffic_class`` (RFC
    3168 (5.3): fragments keep the packet's ECN field).
    """
    if mtu < MIN_MTU:
        raise ValueError(f"MTU {mtu} below the IPv6 minimum {MIN_MTU}")
    view = payload if type(payload) is memoryview else memoryview(payload)
    n = len(view)
    if n > MAX_PAYLOAD - 8:
        raise ValueError(f"payload of {n} bytes exceeds {MAX_PAYLOAD}")
    if HEADER_LEN + n <= mtu:
        return [(build_ipv6_header(src, dst, next_header, n, hop_limit, traffic_class), view)]
    step = (mtu - HEADER_LEN - 8) & ~7
    out = []
    for offset in range(0, n, step):
        piece = view[offset : offset + step]
        more = offset + step < n
        fh = _FRAG.pack(next_header, 0, offset | int(more), ident)
        ip = build_ipv6_header(src, dst, NH_FRAGMENT, 8 + len(piece), hop_limit, traffic_class)
        out.append((ip + fh, piece))
    return out


class _Partial:
    __slots__ = ("deadline", "offsets", "pieces", "received", "total", "next_header")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.offsets: list[int] = []
        self.pieces: dict[int, bytes] = {}
        self.received = 0
        self.total = -1
        self.next_header = -1


_Key = tuple[bytes, bytes, int]


class Reassembler6:
    """Reassembly of IPv6 fragments (RFC 8200 (4.5)), bounded like IPv4's.

    Keyed by (src, dst, Identification). An overlapping fragment discards the whole
    packet (RFC 5722); an exact duplicate is ignored. At most ``max_datagrams`` packets
    and ``max_bytes`` of data are held, oldest evicted first; a packet not complete
    ``timeout`` seconds after its first fragment is discarded (RFC 8200: 60 s).
    """

    def __init__(
        self, max_bytes: int = 1 << 20, max_datagrams: int = 64, timeout: float = 60.0
    ) -> None:
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self.timeout = timeout
        self._partials: dict[_Key, _Partial] = {}
        self._bytes = 0
        self.counters = Counters()

    def __len__(self) -> int:
        return len(self._partials)

    @property
    def bytes_held(self) -> int:
        """Fragment data currently held."""
        return self._bytes

    def _drop(self, key: _Key, reason: str) -> None:
        partial = self._partials.pop(key)
        self._bytes -= partial.received
        self.counters.inc(reason)

    def add(self, hdr: IPv6Header, data: Buffer, now: float) -> tuple[int, bytes] | None:
        """Add one fragment (as parsed by :func:`parse_ipv6`).

        Returns ``(next_header, data)`` of the reassembled packet once complete -- the
        headers that followed the Fragment header and the upper layer -- else None.
        """
        frag = hdr.fragment
        if frag is None:
            raise ValueError("not a fragment")
        c = self.counters
        c.inc("fragments")
        if not hdr.is_fragment:
            # RFC 6946: an atomic fragment is processed on its own
            c.inc("atomic")
            return frag.next_header, bytes(data)
        key = (hdr.src, hdr.dst, frag.ident)
        length = len(data)
        if length > self.max_bytes:
            c.inc("no_memory")
            return None
        partial = self._partials.get(key)
        if partial is None:
            while len(self._partials) >= self.max_datagrams:
                self._drop(next(iter(self._partials)), "evicted")
            partial = _Partial(now + self.timeout)
            self._partials[key] = partial
        offset = frag.offset
        end = offset + length
        if offset == 0:
            partial.next_header = frag.next_header
        if not frag.more:
            if partial.total >= 0 and partial.total != end:
                self._drop(key, "inconsistent")
                return None
            partial.total = end
        if partial.total >= 0 and partial.offsets:
            last = partial.offsets[-1]
            if max(end, last + len(partial.pieces[last])) > partial.total:
                self._drop(key, "inconsistent")
                return None
        pieces = partial.pieces
        existing = pieces.get(offset)
        if existing is not None and len(existing) == length:
            c.inc("duplicates")
            return None
        offsets = partial.offsets
        i = bisect_left(offsets, offset)
        # RFC 5722: any overlap discards the packet, silently
        if (i > 0 and offsets[i - 1] + len(pieces[offsets[i - 1]]) > offset) or (
            i < len(offsets) and offsets[i] < end
        ):
            self._drop(key, "overlaps")
            return None
        while self._bytes + length > self.max_bytes:
            oldest = next(iter(self._partials))
            self._drop(oldest, "no_memory" if oldest == key else "evicted")
            if oldest == key:
                return None
        offsets.insert(i, offset)
        pieces[offset] = bytes(data)
        partial.received += length
        self._bytes += length
        if partial.received != partial.total or partial.next_header < 0:
            return None
        del self._partials[key]
        self._bytes -= partial.received
        c.inc("reassembled")
        return partial.next_header, b"".join([pieces[o] for o in offsets])

    def poll(self, now: float) -> int:
        """Discard packets whose reassembly time ran out; returns how many.

        RFC 8200 (4.5) would send Time Exceeded (code 1) when the first fragment had
        arrived; this stack does not send it.
        """
        expired = [k for k, p in self._partials.items() if p.deadline <= now]
        for key in expired:
            self._drop(key, "timeouts")
        return len(expired)

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has work, or None if nothing is held."""
        if not self._partials:
            return None
        return min(p.deadline for p in self._partials.values())
