"""ARP for IPv4 over Ethernet (RFC 826): packet format and the neighbour table.

:class:`ArpTable` is sans-I/O: it takes parsed ARP packets, outgoing packets waiting for
an address, and the time, and returns ARP payloads to send and held packets to release.
The caller wraps each ARP payload in an Ethernet header (EtherType 0x0806).
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass, field

from anp_async.counters import Counters
from anp_async.proto.checksum import Buffer
from anp_async.proto.errors import ParseError
from anp_async.proto.ethernet import BROADCAST_MAC, ZERO_MAC

OP_REQUEST = 1
OP_REPLY = 2

HTYPE_ETHERNET = 1
PTYPE_IPV4 = 0x0800
PACKET_LEN = 28

_ZERO_IP = b"\x00\x00\x00\x00"

_PACKET = struct.Struct("!HHBBH6s4s6s4s")
_unpack = _PACKET.unpack_from
_pack = _PACKET.pack


@dataclass(slots=True)
class ArpPacket:
    """An ARP packet for Ethernet/IPv4 (all addresses as ``bytes``)."""

    op: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes


def parse_arp(buf: Buffer) -> ArpPacket:
    """Parse an ARP payload. Trailing bytes (Ethernet padding) are ignored.

    ``ParseError`` reasons: ``arp_truncated``, ``arp_bad_htype``, ``arp_bad_ptype``,
    ``arp_bad_len`` (hlen != 6 or plen != 4), ``arp_bad_op`` (not request or reply).
    """
    if len(buf) < PACKET_LEN:
        raise ParseError("arp_truncated", f"{len(buf)} bytes")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _unpack(buf)
    # RFC 826: only the (Ethernet, IPv4) pair is spoken here
    if htype != HTYPE_ETHERNET:
        raise ParseError("arp_bad_htype", str(htype))
    if ptype != PTYPE_IPV4:
        raise ParseError("arp_bad_ptype", hex(ptype))
    if hlen != 6 or plen != 4:
        raise ParseError("arp_bad_len", f"hlen={hlen} plen={plen}")
    if op != OP_REQUEST and op != OP_REPLY:
        raise ParseError("arp_bad_op", str(op))
    return ArpPacket(op, sha, spa, tha, tpa)


def build_arp(pkt: ArpPacket) -> bytes:
    """The 28-byte ARP payload for ``pkt``."""
    return _pack(
        HTYPE_ETHERNET,
        PTYPE_IPV4,
        6,
        4,
        pkt.op,
        pkt.sender_mac,
        pkt.sender_ip,
        pkt.target_mac,
        pkt.target_ip,
    )


@dataclass(slots=True)
class ArpEntry:
    """One resolved neighbour. ``expires`` is ``math.inf`` for static entries."""

    ip: bytes
    mac: bytes
    expires: float
    static: bool = False


@dataclass(slots=True)
class _Pending:
    """An address being resolved, with the packets waiting for it."""

    packets: deque[object] = field(default_factory=deque)
    requests_sent: int = 0
    next_retry: float = 0.0


class ArpTable:
    """The neighbour cache, with hold queues and request retransmission.

    Frames to send are ``(dst_mac, arp_payload)`` pairs. Every structure is bounded:
    ``max_entries`` resolved neighbours, ``max_pending_ips`` addresses being resolved,
    ``hold_per_ip`` packets waiting per address, ``1 + max_retries`` requests per
    resolution.
    """

    def __init__(
        self,
        my_ip: bytes,
        my_mac: bytes,
        *,
        ttl: float = 60.0,
        retry_interval: float = 1.0,
        max_retries: int = 3,
        hold_per_ip: int = 32,
        max_pending_ips: int = 256,
        max_entries: int = 1024,
    ) -> None:
        self.my_ip = bytes(my_ip)
        self.my_mac = bytes(my_mac)
        self.ttl = ttl
        self.retry_interval = retry_interval
        self.max_retries = max_retries
        self.hold_per_ip = hold_per_ip
        self.max_pending_ips = max_pending_ips
        self.max_entries = max_entries
        self._entries: dict[bytes, ArpEntry] = {}
        #: Moves whenever an entry is added, changed or removed (not on expiry: that is
        #: ``expires``): whoever keeps a MAC it looked up knows when to look again.
        self.version = 0
        self._pending: dict[bytes, _Pending] = {}
        # resolutions refused because too many were pending; reported by the next poll()
        self._refused: list[tuple[bytes, list[object]]] = []
        self._refused_at = math.inf
        self._next_purge = math.inf
        self.counters = Counters(
            {
                "requests_sent": 0,
                "replies_sent": 0,
                "requests_received": 0,
                "replies_received": 0,
                "entries_added": 0,
                "entries_updated": 0,
                "entries_expired": 0,
                "entries_evicted": 0,
                "held": 0,
                "released": 0,
                "hold_dropped": 0,
                "resolve_failed": 0,
                "pending_full": 0,
                "own_ignored": 0,
                "conflicts": 0,
                "bogus_sender": 0,
            }
        )

    # -- queries -----------------------------------------------------------------------

    def lookup(self, ip: bytes, now: float) -> bytes | None:
        """The MAC for ``ip``, or None if unknown or expired."""
        entry = self._entries.get(ip)
        if entry is None or entry.expires <= now:
            return None
        return entry.mac

    def lookup_until(self, ip: bytes, now: float) -> tuple[bytes, float] | None:
        """The MAC for ``ip`` and the time it expires (``inf``: static), or None like
        :meth:`lookup`. Kept together with :attr:`version` it stays right until then."""
        entry = self._entries.get(ip)
        if entry is None or entry.expires <= now:
            return None
        return entry.mac, entry.expires

    def entries(self) -> list[ArpEntry]:
        """All entries (including expired ones not yet purged), for ``stats``."""
        return list(self._entries.values())

    def pending(self) -> list[tuple[bytes, int]]:
        """Addresses being resolved, with the number of packets waiting for each."""
        return [(ip, len(p.packets)) for ip, p in self._pending.items()]

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`poll` has work to do, or None."""
        deadline = min(self._refused_at, self._next_purge)
        for p in self._pending.values():
            if p.next_retry < deadline:
                deadline = p.next_retry
        return None if deadline == math.inf else deadline

    # -- configuration -----------------------------------------------------------------

    def add_static(self, ip: bytes, mac: bytes) -> None:
        """A permanent entry that ARP traffic never changes (like ``ip neigh ... permanent``)."""
        self._entries[bytes(ip)] = ArpEntry(bytes(ip), bytes(mac), math.inf, True)
        self.version += 1

    def remove(self, ip: bytes) -> bool:
        """Forget ``ip`` (static or not); True if it was known."""
        self.version += 1
        return self._entries.pop(ip, None) is not None

    # -- behaviour ---------------------------------------------------------------------

    def _request(self, ip: bytes) -> tuple[bytes, bytes]:
        self.counters["requests_sent"] += 1
        return BROADCAST_MAC, _pack(
            HTYPE_ETHERNET, PTYPE_IPV4, 6, 4, OP_REQUEST, self.my_mac, self.my_ip, ZERO_MAC, ip
        )

    def _store(self, ip: bytes, mac: bytes, now: float) -> None:
        entries = self._entries
        if ip not in entries and len(entries) >= self.max_entries:
            self._purge(now)
            if len(entries) >= self.max_entries:
                victim = min(
                    (e for e in entries.values() if not e.static),
                    key=lambda e: e.expires,
                    default=None,
                )
                if victim is None:
                    return
                del entries[victim.ip]
                self.counters["entries_evicted"] += 1
        entries[ip] = ArpEntry(ip, mac, now + self.ttl)
        self.version += 1
        self.counters["entries_added"] += 1
        if self._next_purge == math.inf:
            self._next_purge = now + self.ttl

    def on_arp(
        self, pkt: ArpPacket, now: float
    ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, object]]]:
        """Process a received ARP packet (RFC 826, "Packet Reception").

        Returns ``(frames, released)``: frames to send (the reply if this was a request for
        our address) and the held packets that can now go, each as ``(dst_mac, packet)``.
        """
        counters = self.counters
        if pkt.op == OP_REQUEST:
            counters["requests_received"] += 1
        else:
            counters["replies_received"] += 1
        sender_ip = pkt.sender_ip
        sender_mac = pkt.sender_mac
        frames: list[tuple[bytes, bytes]] = []
        released: list[tuple[bytes, object]] = []
        if sender_mac == self.my_mac:
            counters["own_ignored"] += 1  # our own broadcast looped back
            return frames, released
        if sender_ip == self.my_ip:
            # someone else claims our address (RFC 5227 conflict); never learn it
            counters["conflicts"] += 1
            return frames, released
        # RFC 5227 (2.1.1): a probe has sender IP 0.0.0.0 and must not create an entry;
        # a group MAC can never be a neighbour's address (RFC 1812 (3.3.2))
        learnable = sender_ip != _ZERO_IP and not (sender_mac[0] & 1) and sender_ip[0] < 224
        if not learnable:
            counters["bogus_sender"] += 1
        merged = learnable and self._merge(sender_ip, sender_mac, now)
        for_me = pkt.target_ip == self.my_ip
        pending = self._pending.get(sender_ip) if learnable else None
        # RFC 826: "Am I the target protocol address? ... If Merge_flag is false, add the
        # triplet". An address we are resolving counts as already in the table (incomplete
        # entry), so a gratuitous ARP or a reply sent to another host also completes it.
        if learnable and not merged and (for_me or pending is not None):
            self._store(sender_ip, sender_mac, now)
        if pending is not None:
            del self._pending[sender_ip]
            mac = self.lookup(sender_ip, now) or sender_mac
            released = [(mac, packet) for packet in pending.packets]
            counters["released"] += len(released)
        # RFC 826: "Is the opcode ares_op$REQUEST? ... send the packet to the (new) target
        # hardware address on the same hardware on which the request was received"
        if for_me and pkt.op == OP_REQUEST:
            counters["replies_sent"] += 1
            frames.append((sender_mac, self._reply(sender_mac, sender_ip)))
        return frames, released

    def _merge(self, ip: bytes, mac: bytes, now: float) -> bool:
        """RFC 826: "If the pair <protocol type, sender protocol address> is already in my
        translation table, update the sender hardware address field ... set Merge_flag"
        (a static entry keeps its address). Returns Merge_flag."""
        entry = self._entries.get(ip)
        if entry is None:
            return False
        if not entry.static:
            if entry.mac != mac:
                self.counters["entries_updated"] += 1
                self.version += 1
            entry.mac = mac
            entry.expires = now + self.ttl
        return True

    def _reply(self, target_mac: bytes, target_ip: bytes) -> bytes:
        """Our ARP reply to a request from ``target_ip`` (RFC 826: swap, fill in our MAC)."""
        return _pack(
            HTYPE_ETHERNET, PTYPE_IPV4, 6, 4, OP_REPLY, self.my_mac, self.my_ip, target_mac,
            target_ip,
        )  # fmt: skip

    def resolve(self, ip: bytes, packet: object, now: float) -> list[tuple[bytes, bytes]]:
        """Hold ``packet`` until ``ip`` is resolved; returns ARP requests to send.

        Call after :meth:`lookup` missed. The packet is opaque to the table; it comes back
        from :meth:`on_arp` when the reply arrives, or from :meth:`poll` when resolution
        fails. A full hold queue drops its oldest packet (counted as ``hold_dropped``).
        """
        counters = self.counters
        pending = self._pending.get(ip)
        if pending is None:
            if len(self._pending) >= self.max_pending_ips:
                # refuse the new destination rather than starve ones already in progress;
                # the packet is handed back as failed by the next poll()
                counters["pending_full"] += 1
                self._refused.append((ip, [packet]))
                if self._refused_at == math.inf:
                    self._refused_at = now
                return []
            pending = _Pending(requests_sent=1, next_retry=now + self.retry_interval)
            self._pending[ip] = pending
            frames = [self._request(ip)]
        else:
            frames = []
        packets = pending.packets
        if len(packets) >= self.hold_per_ip:
            counters["hold_dropped"] += 1
            if not packets:
                return frames  # hold_per_ip == 0: nothing may wait
            packets.popleft()
        packets.append(packet)
        counters["held"] += 1
        return frames

    def poll(
        self, now: float
    ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, list[object]]]]:
        """Retransmit due requests, give up on exhausted ones, purge expired entries.

        Returns ``(frames, failed)``: ARP requests to send, and ``(ip, packets)`` for each
        address that did not answer after ``1 + max_retries`` requests (the stack fails
        the waiters with ``OSError(EHOSTUNREACH)``).
        """
        frames: list[tuple[bytes, bytes]] = []
        failed: list[tuple[bytes, list[object]]] = []
        if self._refused:
            failed.extend(self._refused)
            self.counters["resolve_failed"] += len(self._refused)
            self._refused = []
            self._refused_at = math.inf
        for ip, pending in list(self._pending.items()):
            if pending.next_retry > now:
                continue
            if pending.requests_sent > self.max_retries:
                del self._pending[ip]
                self.counters["resolve_failed"] += 1
                failed.append((ip, list(pending.packets)))
                continue
            pending.requests_sent += 1
            pending.next_retry = now + self.retry_interval
            frames.append(self._request(ip))
        if now >= self._next_purge:
            self._purge(now)
        return frames, failed

    def _purge(self, now: float) -> None:
        expired = [ip for ip, e in self._entries.items() if e.expires <= now]
        for ip in expired:
            del self._entries[ip]
        self.counters["entries_expired"] += len(expired)
        soonest = min((e.expires for e in self._entries.values()), default=math.inf)
        self._next_purge = soonest
