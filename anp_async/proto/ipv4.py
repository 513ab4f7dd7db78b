"""IPv4 (RFC 791): header format, fragmentation and reassembly, next-hop choice.

Addresses are 4-byte ``bytes`` everywhere; :func:`ip_to_bytes` / :func:`ip_to_str`
convert at the edges (configuration, ``getpeername``).
"""

from __future__ import annotations

import random
import struct
from bisect import bisect_left
from dataclasses import dataclass

from anp_async.counters import Counters
from anp_async.proto.checksum import Buffer, fold, ones_sum
from anp_async.proto.errors import ParseError

HEADER_LEN = 20
MAX_DATAGRAM = 65535  # RFC 791: Total Length is 16 bits, header included
MIN_MTU = 68  # RFC 791: every module must forward a 68-octet datagram unfragmented

FLAG_DF = 0x2
FLAG_MF = 0x1

ANY_IP = b"\x00\x00\x00\x00"
LIMITED_BROADCAST = b"\xff\xff\xff\xff"

_HEADER = struct.Struct("!BBHHHBBH4s4s")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack
_FROM_BYTES = int.from_bytes


def ip_to_bytes(ip: str | bytes) -> bytes:
    """Dotted quad ``"10.0.0.1"`` to 4 bytes; 4-byte ``bytes`` pass through unchanged."""
    if isinstance(ip, bytes | bytearray):
        if len(ip) != 4:
            raise ValueError(f"IPv4 address must be 4 bytes, got {len(ip)}")
        return bytes(ip)
    parts = ip.split(".")
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() and len(p) <= 3 for p in parts):
        raise ValueError(f"invalid IPv4 address {ip!r}")
    values = [int(p) for p in parts]
    if max(values) > 255:
        raise ValueError(f"invalid IPv4 address {ip!r}")
    return bytes(values)


def ip_to_str(ip: Buffer) -> str:
    """4 bytes to ``"a.b.c.d"``."""
    return "{}.{}.{}.{}".format(*ip)


@dataclass(slots=True)
class IPv4Header:
    """A parsed IPv4 header. ``frag_offset`` is in bytes (the wire field times 8)."""

    tos: int
    total_length: int
    ident: int
    flags: int
    frag_offset: int
    ttl: int
    proto: int
    checksum: int
    src: bytes
    dst: bytes
    header_len: int = HEADER_LEN
    options: bytes = b""

    @property
    def df(self) -> bool:
        """Don't Fragment."""
        return bool(self.flags & FLAG_DF)

    @property
    def mf(self) -> bool:
        """More Fragments."""
        return bool(self.flags & FLAG_MF)

    @property
    def is_fragment(self) -> bool:
        """True unless this datagram is whole (MF clear and offset zero)."""
        return bool(self.flags & FLAG_MF) or self.frag_offset != 0

    @property
    def payload_len(self) -> int:
        """Length of the data after the header, per Total Length."""
        return self.total_length - self.header_len


def parse_ipv4_header(buf: Buffer, verify_checksum: bool = True) -> IPv4Header:
    """Parse and validate only the header (version, IHL, checksum).

    Total Length is *not* checked against ``buf``: this is what parses the header quoted
    inside an ICMP error, which carries only the first bytes of the original datagram.
    """
    n = len(buf)
    if n < HEADER_LEN:
        raise ParseError("ip_truncated", f"{n} bytes")
    vihl, tos, total, ident, frag, ttl, proto, csum, src, dst = _unpack_header(buf)
    if vihl >> 4 != 4:
        raise ParseError("ip_bad_version", str(vihl >> 4))
    ihl = (vihl & 0x0F) << 2
    if ihl < HEADER_LEN:
        raise ParseError("ip_bad_ihl", str(ihl))
    if ihl > n:
        raise ParseError("ip_truncated", f"header {ihl} > {n} bytes")
    if verify_checksum:
        view = buf if ihl == n else memoryview(buf)[:ihl]
        # RFC 791 (3.1) / RFC 1071: the header including its checksum sums to all ones
        if ones_sum(view) != 0xFFFF:
            raise ParseError("ip_bad_checksum")
    options = bytes(memoryview(buf)[HEADER_LEN:ihl]) if ihl > HEADER_LEN else b""
    return IPv4Header(
        tos,
        total,
        ident,
        frag >> 13,
        (frag & 0x1FFF) << 3,
        ttl,
        proto,
        csum,
        src,
        dst,
        ihl,
        options,
    )


def parse_ipv4(buf: Buffer, verify_checksum: bool = True) -> tuple[IPv4Header, memoryview]:
    """Parse a datagram into ``(header, payload)``; the payload is a view, not a copy.

    Total Length is checked against the buffer and the payload trimmed to it, which drops
    the Ethernet padding of short frames. ``ParseError`` reasons: ``ip_truncated``,
    ``ip_bad_version``, ``ip_bad_ihl``, ``ip_bad_length``, ``ip_bad_checksum``.
    """
    hdr = parse_ipv4_header(buf, verify_checksum)
    total = hdr.total_length
    if total < hdr.header_len:
        raise ParseError("ip_bad_length", f"total length {total} < header {hdr.header_len}")
    if total > len(buf):
        raise ParseError("ip_bad_length", f"total length {total} > {len(buf)} bytes")
    view = buf if type(buf) is memoryview else memoryview(buf)
    return hdr, view[hdr.header_len : total]


def header_sum(
    tos: int, total: int, ident: int, frag: int, ttl: int, proto: int, src: bytes, dst: bytes
) -> int:
    """Folded ones' complement sum of a 20-byte header with a zero checksum field."""
    return fold(
        (0x4500 | tos)
        + total
        + ident
        + frag
        + ((ttl << 8) | proto)
        + _FROM_BYTES(src, "big")
        + _FROM_BYTES(dst, "big")
    )


def build_ipv4_header(
    src: bytes,
    dst: bytes,
    proto: int,
    payload_len: int,
    ident: int,
    ttl: int = 64,
    tos: int = 0,
    df: bool = True,
    *,
    mf: bool = False,
    frag_offset: int = 0,
) -> bytes:
    """A 20-byte header (no options) with its checksum filled in.

    ``frag_offset`` is in bytes and must be a multiple of 8. The checksum is computed from
    the field values, so the header is packed once.
    """
    total = HEADER_LEN + payload_len
    if total > MAX_DATAGRAM:
        raise ValueError(f"datagram of {total} bytes exceeds {MAX_DATAGRAM}")
    frag = (frag_offset >> 3) | (0x4000 if df else 0) | (0x2000 if mf else 0)
    csum = ~header_sum(tos, total, ident, frag, ttl, proto, src, dst) & 0xFFFF
    return _pack_header(0x45, tos, total, ident, frag, ttl, proto, csum, src, dst)


class IdGenerator:
    """Identification values for outgoing datagrams: a 16-bit counter from a random start.

    RFC 791: the ID must be unique for a (src, dst, proto) while the datagram can be alive;
    one counter for all destinations satisfies that for up to 65536 datagrams in flight.
    """

    __slots__ = ("_next",)

    def __init__(self, seed: int | None = None) -> None:
        self._next = (seed if seed is not None else random.getrandbits(16)) & 0xFFFF

    def next(self) -> int:
        """The next ID (wraps at 16 bits)."""
        value = self._next
        self._next = (value + 1) & 0xFFFF
        return value

    __call__ = next

    def __iter__(self) -> IdGenerator:
        return self

    def __next__(self) -> int:
        return self.next()


def fragment(
    payload: Buffer,
    mtu: int,
    src: bytes,
    dst: bytes,
    proto: int,
    ident: int,
    ttl: int = 64,
    tos: int = 0,
    df: bool = False,
) -> list[tuple[bytes, memoryview]]:
    """Headers and payload views for sending ``payload`` over a link of ``mtu`` bytes.

    A datagram that fits is returned whole (one pair, DF as given). One that does not is
    cut into pieces whose data lengths are multiples of 8 except the last (RFC 791
    (3.2), fragmentation); ``df=True`` then raises ``ValueError`` (the caller reports
    EMSGSIZE).
    """
    if mtu < MIN_MTU:
        raise ValueError(f"MTU {mtu} below the IPv4 minimum {MIN_MTU}")
    view = payload if type(payload) is memoryview else memoryview(payload)
    n = len(view)
    if HEADER_LEN + n > MAX_DATAGRAM:
        raise ValueError(f"datagram of {HEADER_LEN + n} bytes exceeds {MAX_DATAGRAM}")
    if HEADER_LEN + n <= mtu:
        return [(build_ipv4_header(src, dst, proto, n, ident, ttl, tos, df), view)]
    if df:
        raise ValueError(f"datagram of {HEADER_LEN + n} bytes exceeds MTU {mtu} with DF set")
    step = (mtu - HEADER_LEN) & ~7
    out = []
    for offset in range(0, n, step):
        piece = view[offset : offset + step]
        more = offset + step < n
        hdr = build_ipv4_header(
            src, dst, proto, len(piece), ident, ttl, tos, False, mf=more, frag_offset=offset
        )
        out.append((hdr, piece))
    return out


class _Partial:
    """One datagram being reassembled."""

    __slots__ = ("deadline", "offsets", "pieces", "received", "total", "header_len")

    def __init__(self, deadline: float, header_len: int) -> None:
        self.deadline = deadline
        self.offsets: list[int] = []  # sorted start offsets of the pieces held
        self.pieces: dict[int, bytes] = {}  # offset -> data
        self.received = 0  # data bytes held
        self.total = -1  # data length, known once the last fragment arrived
        self.header_len = header_len


_Key = tuple[bytes, bytes, int, int]


class Reassembler:
    """Reassembly of fragmented datagrams (RFC 791 (3.2)), bounded in memory and time.

    Datagrams are keyed by (src, dst, proto, ident) (RFC 791). Overlapping fragments
    discard the whole datagram: an exact duplicate is ignored, but any other overlap makes
    the result ambiguous and is the classic attack (teardrop), so it is refused, as RFC
    5722 requires for IPv6 and Linux does for IPv4. Fragment data is copied (the NIC
    buffer it views may be reused). At most ``max_datagrams`` partial datagrams and
    ``max_bytes`` of fragment data are held; the oldest datagrams are dropped to make room.
    Pieces are kept sorted, so a datagram cut into thousands of tiny fragments costs
    O(log n) per fragment to check, not O(n).
    """

    def __init__(
        self, max_bytes: int = 1 << 20, max_datagrams: int = 64, timeout: float = 30.0
    ) -> None:
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self.timeout = timeout
        self._partials: dict[_Key, _Partial] = {}
        self._bytes = 0
        self.counters = Counters(
            {
                "fragments": 0,
                "reassembled": 0,
                "timeouts": 0,
                "duplicates": 0,
                "overlaps": 0,
                "too_big": 0,
                "bad_fragment": 0,
                "inconsistent": 0,
                "evicted": 0,
                "no_memory": 0,
            }
        )

    @property
    def bytes_held(self) -> int:
        """Fragment data currently held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._partials)

    def _drop(self, key: _Key, reason: str) -> None:
        partial = self._partials.pop(key)
        self._bytes -= partial.received
        self.counters[reason] += 1

    def add(self, hdr: IPv4Header, payload: Buffer, now: float) -> bytes | None:
        """Add one fragment; returns the whole datagram's data once complete, else None.

        A datagram that is not a fragment is returned as is (copied); callers normally
        test ``hdr.is_fragment`` first and skip the copy. Every fragment dropped is
        counted under the reason.
        """
        if not hdr.is_fragment:
            return bytes(payload)
        self.counters["fragments"] += 1
        key = (hdr.src, hdr.dst, hdr.proto, hdr.ident)
        if not self._acceptable(key, hdr, len(payload)):
            return None
        partial = self._partial_for(key, hdr, now)
        end = hdr.frag_offset + len(payload)
        if not self._total_consistent(key, partial, bool(hdr.flags & FLAG_MF), end):
            return None
        if payload and not self._insert(key, partial, hdr.frag_offset, payload):
            return None
        if partial.received == partial.total:
            return self._complete(key, partial)
        return None

    def _acceptable(self, key: _Key, hdr: IPv4Header, length: int) -> bool:
        """Checks of the fragment alone: size rules of RFC 791 and the memory bound."""
        counters = self.counters
        # RFC 791 (3.2): every fragment but the last carries a multiple of 8 data octets
        if hdr.flags & FLAG_MF and (length == 0 or length & 7):
            counters["bad_fragment"] += 1
            return False
        # RFC 791: a datagram is at most 65535 octets, header included
        if hdr.frag_offset + length + hdr.header_len > MAX_DATAGRAM:
            if key in self._partials:
                self._drop(key, "too_big")
            else:
                counters["too_big"] += 1
            return False
        if length > self.max_bytes:
            counters["no_memory"] += 1
            return False
        return True

    def _partial_for(self, key: _Key, hdr: IPv4Header, now: float) -> _Partial:
        """The datagram this fragment belongs to, started (evicting the oldest) if new."""
        partial = self._partials.get(key)
        if partial is None:
            while len(self._partials) >= self.max_datagrams:
                self._drop(next(iter(self._partials)), "evicted")
            # RFC 791 suggests a timer started by the first fragment; it is not extended
            # by later ones, so a trickle of fragments cannot hold memory forever
            partial = _Partial(now + self.timeout, hdr.header_len)
            self._partials[key] = partial
        elif hdr.frag_offset == 0:
            partial.header_len = hdr.header_len
        return partial

    def _total_consistent(self, key: _Key, partial: _Partial, more: bool, end: int) -> bool:
        """The last fragment fixes the total length; nothing may lie beyond it."""
        if not more:
            if partial.total >= 0 and partial.total != end:
                self._drop(key, "inconsistent")
                return False
            partial.total = end
        elif partial.total >= 0 and end > partial.total:
            self._drop(key, "inconsistent")
            return False
        offsets = partial.offsets
        if partial.total >= 0 and offsets:
            last = offsets[-1]
            if last + len(partial.pieces[last]) > partial.total:
                self._drop(key, "inconsistent")
                return False
        return True

    def _insert(self, key: _Key, partial: _Partial, offset: int, payload: Buffer) -> bool:
        """Store the fragment's data: an exact duplicate is ignored, an overlap drops the
        datagram (as RFC 5722 requires for IPv6 and Linux does for IPv4), and memory is
        made oldest first."""
        length = len(payload)
        end = offset + length
        offsets = partial.offsets
        pieces = partial.pieces
        existing = pieces.get(offset)
        if existing is not None and len(existing) == length:
            self.counters["duplicates"] += 1
            return False
        i = bisect_left(offsets, offset)
        if i > 0:
            before = offsets[i - 1]
            if before + len(pieces[before]) > offset:
                self._drop(key, "overlaps")
                return False
        if i < len(offsets) and offsets[i] < end:
            self._drop(key, "overlaps")
            return False
        # make room, oldest first; if only this datagram is left, it goes
        while self._bytes + length > self.max_bytes:
            oldest = next(iter(self._partials))
            self._drop(oldest, "no_memory" if oldest == key else "evicted")
            if oldest == key:
                return False
        offsets.insert(i, offset)
        pieces[offset] = bytes(payload)
        partial.received += length
        self._bytes += length
        return True

    def _complete(self, key: _Key, partial: _Partial) -> bytes | None:
        """Every byte is here: the datagram's data (None if it came out too big)."""
        del self._partials[key]
        self._bytes -= partial.received
        if partial.header_len + partial.total > MAX_DATAGRAM:
            self.counters["too_big"] += 1
            return None
        self.counters["reassembled"] += 1
        return b"".join([partial.pieces[o] for o in partial.offsets])

    def poll(self, now: float) -> int:
        """Discard datagrams whose reassembly timer expired; returns how many.

        RFC 792 would have a Time Exceeded (code 1) sent when fragment zero had arrived;
        this stack does not send it.
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


def _mask(prefix_len: int) -> int:
    return (0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF


class Interface:
    """An IPv4 interface address with its subnet and optional default gateway.

    Decides where a datagram goes next (RFC 1122 (3.3.1.1)): a destination on the subnet
    is reached directly, anything else through the gateway.
    """

    __slots__ = ("ip", "prefix_len", "gateway", "mask", "network", "broadcast", "_ip_int")

    def __init__(self, ip: bytes, prefix_len: int, gateway: bytes | None = None) -> None:
        if len(ip) != 4:
            raise ValueError("ip must be 4 bytes")
        if not 0 <= prefix_len <= 32:
            raise ValueError(f"prefix length {prefix_len} out of range")
        self.ip = bytes(ip)
        self.prefix_len = prefix_len
        self.mask = _mask(prefix_len)
        self._ip_int = _FROM_BYTES(ip, "big")
        self.network = self._ip_int & self.mask
        # RFC 3021: a /31 has no broadcast address; nor has a /32
        if prefix_len >= 31:
            self.broadcast: bytes | None = None
        else:
            self.broadcast = (self.network | (~self.mask & 0xFFFFFFFF)).to_bytes(4, "big")
        if gateway is not None:
            gateway = bytes(gateway)
            if len(gateway) != 4 or not self.on_link(gateway) or gateway == self.ip:
                raise ValueError("gateway must be another address on the interface's subnet")
        self.gateway = gateway

    def __repr__(self) -> str:
        gw = f" via {ip_to_str(self.gateway)}" if self.gateway else ""
        return f"Interface({ip_to_str(self.ip)}/{self.prefix_len}{gw})"

    def is_local(self, dst: bytes) -> bool:
        """True if ``dst`` is this interface's own address."""
        return dst == self.ip

    def is_broadcast(self, dst: bytes) -> bool:
        """Limited (255.255.255.255) or this subnet's directed broadcast (RFC 919/922)."""
        return dst == LIMITED_BROADCAST or dst == self.broadcast

    def on_link(self, dst: bytes) -> bool:
        """True if ``dst`` is on this interface's subnet."""
        return (_FROM_BYTES(dst, "big") & self.mask) == self.network

    def accepts(self, dst: bytes) -> bool:
        """True if a datagram to ``dst`` received here is for this host."""
        return dst == self.ip or dst == LIMITED_BROADCAST or dst == self.broadcast

    def next_hop(self, dst: bytes) -> bytes | None:
        """The address to resolve with ARP for a datagram to ``dst``, or None if unreachable.

        Broadcast and on-link destinations are their own next hop (the stack maps a
        broadcast to the broadcast MAC without ARP), others go to the gateway. Addresses
        that never appear on a wire (0/8, 127/8; RFC 1122 (3.2.1.3)) give None, as do
        off-link ones without a gateway (the stack raises ENETUNREACH).
        """
        first = dst[0]
        if first == 0 or first == 127:
            return None
        if dst == LIMITED_BROADCAST or 224 <= first <= 239 or self.on_link(dst):
            return dst
        return self.gateway
