"""The established-connection fast path on raw frames: header prediction in, header
templates out (Van Jacobson's header prediction, as in 4.3BSD-Reno's tcp_input and Clark,
Jacobson, Romkey and Salwen, "An Analysis of TCP Processing Overhead", 1989; RFC 9293
3.10.7.4 is the processing it must agree with).

Receive (:func:`predict_frame`): most frames of an established connection look like the
one before: Ethernet to our MAC, IPv4 without options or fragmentation, TCP with only ACK
(and PSH) set and at most the timestamp option. Such a frame is read with one ``unpack``
and its connection found by the raw bytes of its addresses and ports; the connection then
checks the rest of the prediction (:meth:`TcpConnection.rx_predicted`: the next sequence
number, an acceptable ACK, a timestamp not older than TS.Recent). Whatever does not fit
goes the full way (``parse_ethernet`` -> ``parse_ipv4`` -> ``parse_tcp`` -> ``TcpHost``
-> ``on_segment``), which gives the same answer -- the fast path only skips work.

Send (:class:`HeaderTemplate`): most of a connection's Ethernet, IPv4 and TCP headers
never change (addresses, ports, TTL, protocol, the timestamp option's layout); the
template holds them with their share of both checksums, and each segment packs only its
own fields. The neighbour's MAC is part of it, so the template records which version of
the ARP table it was built from and until when the entry is valid; the stack puts in a
new link header (:meth:`HeaderTemplate.relink`) when either moved.

Sans-I/O like the rest of ``proto/``: bytes in, bytes and decisions out.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ..checksum import fold, ones_sum, verify_transport
from ..numbers import IPPROTO_TCP
from .segment import ACK, PSH, TcpSegment

__all__ = ["TX_NOT_TEMPLATED", "TX_SENT", "TX_TSO", "HeaderTemplate", "predict_frame"]

#: What sending through a template did: nothing (the segment takes the layered way), sent
#: one segment, or sent a TSO super-segment for the NIC to cut.
TX_NOT_TEMPLATED, TX_SENT, TX_TSO = 0, 1, 2

_FROM_BYTES = int.from_bytes

# Ethernet (14) + IPv4 without options (20) + TCP (20) as the prediction reads them:
# destination MAC, EtherType | version+IHL, TOS, total length, flags+fragment offset,
# protocol | source IP, destination IP, source and destination port as one 12-byte key |
# SEQ, ACK, data offset, flags, window.
_RX = struct.Struct("!6s6xHBBH2xHxB2x12sIIBBH4x")
_RX_LEN = _RX.size  # 54
# The timestamp option as nearly every segment carries it (RFC 7323 Appendix A):
# NOP, NOP, kind 8, length 10, TSval, TSecr.
_RX_TS = struct.Struct("!III")
_TS_WORD = 0x0101080A
_ETH_P_IP = 0x0800
_IPV4_NO_OPTIONS = 0x45  # version 4, IHL 5
# Flags + fragment offset, DF masked out: MF or an offset means a fragment.
_FRAGMENT = 0x3FFF
_CE = 3  # RFC 3168 (5): congestion experienced, the IP header's ECN field
_NO_OPTIONS = 5 << 4  # TCP data offset of a 20-byte header
_TS_ONLY = 8 << 4  # TCP data offset of a 32-byte header (the timestamp option)


def predict_frame(
    frame: bytes, off: int, mac: bytes, verify: bool
) -> tuple[bytes, int, int, int, tuple[int, int] | None, memoryview] | None:
    """Read a frame (from byte ``off``) that fits the prediction: (key, SEQ, ACK, window,
    timestamp or None, payload view); None sends it the full way.

    ``key`` is source IP, destination IP, source port, destination port as they stand in
    the frame (12 bytes): the connection's name in :attr:`TcpLayer.fast_table`.
    ``verify``: check the TCP checksum (the NIC did not vouch for it). The IPv4 header
    checksum is always checked, as ``parse_ipv4`` does.
    """
    n = len(frame) - off
    if n < _RX_LEN:
        return None
    (dst_mac, ethertype, vihl, tos, total, frag, proto, key,
     seq, ack, doff, flags, window) = _RX.unpack_from(frame, off)  # fmt: skip
    if (
        dst_mac != mac
        or ethertype != _ETH_P_IP
        or vihl != _IPV4_NO_OPTIONS
        or proto != IPPROTO_TCP
        or frag & _FRAGMENT
        or tos & 3 == _CE
        # ACK, maybe PSH; no SYN, FIN, RST, URG, ECE, CWR (RFC 9293 3.10.7.4 note).
        or flags | PSH != ACK | PSH
        or total > n - 14
    ):
        return None
    ip = off + 14
    # RFC 791 (3.1): the header, its checksum included, sums to all ones (0 mod 0xffff).
    if _FROM_BYTES(frame[ip : ip + 20], "big") % 0xFFFF:
        return None
    if doff == _TS_ONLY:
        if total < 52:
            return None
        word, tsval, tsecr = _RX_TS.unpack_from(frame, off + _RX_LEN)
        if word != _TS_WORD:
            return None
        ts: tuple[int, int] | None = (tsval, tsecr)
        data = ip + 52
    elif doff == _NO_OPTIONS:
        if total < 40:
            return None
        ts = None
        data = ip + 40
    else:
        return None  # other options (SACK blocks ...): parse_options' job
    if verify and not verify_transport(
        key[:4], key[4:8], IPPROTO_TCP, memoryview(frame)[ip + 20 : ip + total]
    ):
        return None  # counted by the full way
    return key, seq, ack, window, ts, memoryview(frame)[data : ip + total]


# Header of a segment sent with a template: the frame's constant head (virtio-net header,
# Ethernet, IPv4 version/IHL and TOS 0), IPv4 total length, ID, DF+TTL+protocol, header
# checksum, addresses and ports, SEQ, ACK, data offset+flags, window, TCP checksum,
# (urgent pointer 0).
_TX = "!{}sHH4sH12sIIHHH2x"
# ... and the timestamp option: NOP NOP 8 10 as one word, TSval, TSecr.
_TX_TS = _TX + "III"


class HeaderTemplate:
    """The prebuilt headers of one IPv4 connection's frames.

    ``link`` is what precedes the IPv4 header (the virtio-net header, if any, and the
    Ethernet header); ``partial``: leave the TCP checksum partial for the NIC (checksum
    offload: the pseudo-header sum in the field), else compute it whole; ``mtu``: larger
    datagrams are not templated (they would need fragments). ``next_hop`` is the
    neighbour whose MAC heads the frames (``dst`` or the gateway); ``arp_version`` and
    ``expires`` say which ARP entry it came from (:meth:`relink` puts in a new one).
    """

    __slots__ = (
        "head",
        "ip_offset",
        "dst",
        "next_hop",
        "addrs",
        "partial",
        "mtu",
        "arp_version",
        "expires",
        "_ip_sum",
        "_pseudo",
        "_tcp_sum",
        "_pack",
        "_pack_ts",
        "_mid",
    )

    def __init__(
        self,
        link: bytes,
        src_ip: bytes,
        dst_ip: bytes,
        sport: int,
        dport: int,
        *,
        partial: bool,
        mtu: int = 1500,
        next_hop: bytes | None = None,
        ttl: int = 64,
        arp_version: int = 0,
        expires: float = float("inf"),
    ) -> None:
        self.head = link + b"\x45\x00"  # version 4, IHL 5, TOS 0 (no ECN codepoint)
        #: Where the IPv4 header starts in what :meth:`header` returns.
        self.ip_offset = len(link)
        self.dst = dst_ip
        self.next_hop = dst_ip if next_hop is None else next_hop
        self.addrs = src_ip + dst_ip + struct.pack("!HH", sport, dport)
        self.partial = partial
        self.mtu = mtu
        self.arp_version = arp_version
        self.expires = expires
        addr_sum = _FROM_BYTES(src_ip, "big") + _FROM_BYTES(dst_ip, "big")
        # RFC 791 (3.1): the constant words of the IPv4 header (version/IHL/TOS 0, DF,
        # TTL/protocol, addresses); total length and ID are added per datagram.
        self._ip_sum = 0x4500 + 0x4000 + ((ttl << 8) | IPPROTO_TCP) + addr_sum
        self._mid = struct.pack("!HBB", 0x4000, ttl, IPPROTO_TCP)
        # RFC 9293 (3.1): the pseudo header without its length ...
        self._pseudo = addr_sum + IPPROTO_TCP
        # ... and, for a whole checksum, the header words that never change (the ports).
        self._tcp_sum = self._pseudo + sport + dport
        n = len(self.head)
        self._pack = struct.Struct(_TX.format(n)).pack
        self._pack_ts = struct.Struct(_TX_TS.format(n)).pack

    def relink(self, link: bytes, arp_version: int, expires: float) -> None:
        """A new link header (same length: the neighbour's MAC changed or was looked up
        again) from ARP table version ``arp_version``, valid until ``expires``."""
        if len(link) + 2 != len(self.head):
            raise ValueError("a template's link header keeps its length")
        self.head = link + b"\x45\x00"
        self.arp_version = arp_version
        self.expires = expires

    def header(self, seg: TcpSegment, next_id: Callable[[], int], mss: int = 0) -> bytes | None:
        """Everything in front of ``seg``'s payload (head, IPv4, TCP), taking an IPv4 ID
        from ``next_id``; None (no ID taken) when the segment is not template-shaped:
        options other than the timestamp alone, an ECN codepoint, an urgent pointer, or a
        datagram beyond the MTU. With ``mss`` (the connection's, 0: no TSO) and a partial
        checksum, more payload than one ``mss`` segment is a TSO super-segment: its IPv4
        total length is the whole's (up to 65,535), and the NIC cuts it (the caller
        gives it the virtio-net header that asks for the cut)."""
        if seg.ecn or seg.urg:
            return None
        o = seg.options
        plen = len(seg.payload)
        seq = seg.seq
        ack = seg.ack
        window = seg.window
        flags = seg.flags
        if o is None:
            thl = 20
            offflags = 0x5000 | flags
            tcp_sum = 0 if self.partial else seq + ack + offflags + window
        else:
            ts = o.timestamp
            if ts is None or o.sack_blocks or o.mss is not None or o.wscale is not None:
                return None
            if o.sack_permitted:
                return None
            tsval, tsecr = ts
            thl = 32
            offflags = 0x8000 | flags
            tcp_sum = (
                0 if self.partial else seq + ack + offflags + window + _TS_WORD + tsval + tsecr
            )
        tcp_len = thl + plen
        total = 20 + tcp_len
        # RFC 6691 (as the offload cuts): the MSS counts data behind a 20-byte header.
        if mss and plen > mss + 20 - thl:
            if not self.partial or total > 0xFFFF:
                return None  # TSO needs checksum offload; IPv4 lengths have 16 bits
        elif total > self.mtu:
            return None
        ident = next_id()
        # (checksum.fold inlined: these sums are never 0, so "% 0xffff or 0xffff" is it.)
        ip_csum = ~((self._ip_sum + total + ident) % 0xFFFF or 0xFFFF) & 0xFFFF
        if self.partial:
            # Checksum offload: the pseudo-header sum, folded, not inverted (the NIC
            # sums from the TCP header on and stores the inverse).
            csum = (self._pseudo + tcp_len) % 0xFFFF or 0xFFFF
        else:
            if plen:
                tcp_sum += ones_sum(seg.payload)
            csum = ~fold(self._tcp_sum + tcp_len + tcp_sum) & 0xFFFF
        if o is None:
            return self._pack(self.head, total, ident, self._mid, ip_csum, self.addrs,
                              seq, ack, offflags, window, csum)  # fmt: skip
        return self._pack_ts(self.head, total, ident, self._mid, ip_csum, self.addrs,
                             seq, ack, offflags, window, csum, _TS_WORD, tsval, tsecr)  # fmt: skip
