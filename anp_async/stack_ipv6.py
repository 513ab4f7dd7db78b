"""The stack's IPv6 side: addresses, Neighbor Discovery, ICMPv6, and IPv6 in and out.

:class:`Stack` owns one :class:`Ipv6Layer` when it has an IPv6 address. The layer walks a
received packet down IPv6 (extension headers, fragments) to ICMPv6 -- echo, errors and
Neighbor Discovery answered here -- or to the same TCP and UDP layers IPv4 feeds, and
sends the packets of those layers, resolving next hops with the neighbour cache
(RFC 4861) as IPv4 does with ARP. The protocol rules are in ``proto/ipv6.py``,
``proto/icmpv6.py`` and ``proto/nd.py``; this module is the glue around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from .counters import Counters
from .nic.base import Buffer
from .proto import icmpv6, nd
from .proto import ipv6 as ip6
from .proto.errors import ParseError
from .proto.ethernet import ETH_P_IPV6
from .proto.numbers import IPPROTO_TCP, IPPROTO_UDP

if TYPE_CHECKING:
    from .transport.ping import PingLayer
    from .transport.tcp import TcpLayer
    from .transport.udp import UdpLayer

# ICMPv6 Destination Unreachable codes that end a connection being opened, given to the
# TCP and UDP layers as the IPv4 (type, code) they know (RFC 4443 (3.1), RFC 1122 4.2.3.9)
_DEST_UNREACH4 = 3
_ICMP6_TO_ICMP4 = {
    icmpv6.PORT_UNREACH: 3,  # port unreachable
    icmpv6.ADMIN_PROHIBITED: 13,  # communication administratively prohibited
    icmpv6.NO_ROUTE: 0,
    icmpv6.ADDR_UNREACH: 1,
    icmpv6.BEYOND_SCOPE: 1,
}


def parse_prefix6(text: str) -> tuple[bytes, int]:
    """``"fd00::2/64"`` to (16 bytes, 64); a missing prefix length means /64."""
    addr, sep, plen = text.partition("/")
    ip = ip6.ip6_to_bytes(addr)
    if sep and not (plen.isdigit() and 0 <= int(plen) <= 128):
        raise ValueError(f"ip {text!r}: the prefix length must be 0..128")
    if ip6.is_multicast(ip) or ip == ip6.ANY or ip == ip6.LOOPBACK:
        raise ValueError(f"ip {text!r} cannot be an interface address")
    return ip, int(plen) if sep else 64


class Ipv6Owner(Protocol):
    """What the IPv6 layer needs of the stack that owns it (``stack.Stack`` is one): this
    module never imports ``stack.py``, which imports it."""

    mac_b: bytes
    mtu: int
    #: The NIC vouched for the transport checksum of the packet being received.
    rx_csum_trusted: bool
    tcp: TcpLayer
    udp: UdpLayer
    ping_sockets: PingLayer

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the stack runs on (None before it starts)."""

    def now(self) -> float:
        """The stack's clock (the loop's time)."""

    def send_frame(
        self, dst_mac: bytes, ethertype: int, parts: list[Buffer], vnet: bytes | None = None
    ) -> None:
        """One Ethernet frame to ``dst_mac`` carrying ``parts``."""

    def arm_timer(self, name: str, when: float | None, cb: Callable[[], None]) -> None:
        """Keep one loop timer named ``name`` at ``when`` (None cancels it)."""

    def notify_unreachable(self, next_hop: bytes) -> None:
        """Neighbor Discovery gave up on ``next_hop``: fail what waits for it."""


class Ipv6Layer:
    """IPv6 for one :class:`Stack`: its addresses (the configured one and a link-local
    one from the MAC), DAD, the neighbour cache, routers, ICMPv6 and fragments."""

    def __init__(
        self,
        stack: Ipv6Owner,
        address: str,
        gateway: str | None = None,
        *,
        dad_transmits: int = 1,
    ) -> None:
        self.stack = stack
        self.ip_b, self.prefix_len = parse_prefix6(address)
        self.ip = ip6.ip6_to_str(self.ip_b)
        self.link_local = ip6.link_local_from_mac(stack.mac_b)
        self.gateway = ip6.ip6_to_bytes(gateway) if gateway else None
        self.mtu = stack.mtu  # at least 1280: Stack checks (RFC 8200 (5))
        self.neighbors = nd.NeighborCache()
        self.dad = nd.DadTable(transmits=dad_transmits)
        self.routers = nd.RouterList(self.mtu)
        self.reassembler = ip6.Reassembler6()
        self.errors = icmpv6.RateLimiter()
        #: Path MTUs learnt from Packet Too Big (RFC 8201): destination -> (mtu, expiry).
        self.pmtu: dict[bytes, tuple[int, float]] = {}
        self.counters = Counters()
        self.icmp_counters = Counters()
        self._ident = int.from_bytes(os.urandom(4), "big")
        self._pings: dict[tuple[int, int], tuple[asyncio.Future[float], bytes, float]] = {}
        self._ping_seq = 0
        #: Packets from an address still in DAD, sent once it is ours (RFC 4862 (5.4):
        #: a tentative address is not used as a source); bounded.
        self._tentative_hold: list[
            tuple[bytes, int, list[Buffer], int, bytes, bytes | None, int]
        ] = []
        # groups we listen to: all-nodes and the solicited-node group of each address
        self.groups = {ip6.ALL_NODES}
        for a in (self.ip_b, self.link_local):
            self.groups.add(ip6.solicited_node(a))
        self.group_macs = {ip6.multicast_mac(g) for g in self.groups}

    # ----------------------------------------------------------------- start

    def start(self) -> None:
        """Begin DAD on our addresses (RFC 4862 (5.4)) and solicit routers (RFC 4861 (6.3.7))."""
        now = self.stack.now()
        for addr in (self.link_local, self.ip_b):
            for target in self.dad.add(addr, now):
                self._send_ns(target, ip6.solicited_node(target), ip6.multicast_mac(
                    ip6.solicited_node(target)), dad=True)  # fmt: skip
        if self.routers.start(now):
            self._send_rs()
        self._arm()

    @property
    def ready(self) -> bool:
        """True once DAD has finished for the configured address."""
        return self.ip_b in self.dad.preferred

    def ours(self, addr: bytes) -> bool:
        """One of our addresses, past DAD."""
        return addr in self.dad.preferred

    def accepts_mac(self, mac: bytes) -> bool:
        """A multicast Ethernet address of a group we joined (RFC 2464 (7))."""
        return mac in self.group_macs

    # --------------------------------------------------------------- receive

    def input(self, packet: memoryview, src_mac: bytes, link_multicast: bool) -> None:
        """One IPv6 packet from Ethernet."""
        c = self.counters
        try:
            hdr, data = ip6.parse_ipv6(packet)
        except ip6.ParamProblem as e:
            c.inc(e.reason)
            self._param_problem(packet, e, link_multicast)
            return
        except ParseError as e:
            c.inc(e.reason)
            return
        dst = hdr.dst
        if not (self.ours(dst) or dst in self.groups or self.dad.is_tentative(dst)):
            c.inc("not_for_us")
            return
        if self.dad.is_tentative(dst) and hdr.proto != ip6.NH_ICMPV6:
            c.inc("to_tentative_dropped")  # RFC 4862 (5.4): not ours yet
            return
        c.inc("rx_packets")
        if hdr.fragment is not None:
            whole = self.reassembler.add(hdr, data, self.stack.now())
            self._arm()
            if whole is None:
                return
            nh, buf = whole
            try:
                proto, offset, frag = ip6.walk_extensions(buf, nh, 0, ip6.is_multicast(dst))
            except ParseError as e:
                c.inc("reassembled_" + e.reason)
                return
            if frag is not None:
                c.inc("nested_fragment")
                return
            c.inc("reassembled")
            self.stack.rx_csum_trusted = False
            # hdr.fragment stays: the last fragment's, which an error would have to quote
            hdr.proto = proto
            data = memoryview(buf)[offset:]
            hdr.payload_length = hdr.header_len - ip6.HEADER_LEN + len(buf)
        proto = hdr.proto
        if proto == IPPROTO_TCP:
            if ip6.is_multicast(dst):
                c.inc("tcp_to_multicast")
                return
            self.stack.tcp.input(hdr, data)
        elif proto == IPPROTO_UDP:
            self.stack.udp.input(hdr, data, packet)
        elif proto == ip6.NH_ICMPV6:
            self._rx_icmp(hdr, data, src_mac)
        elif proto == ip6.NH_NONE:
            c.inc("no_next_header")
        else:
            c.inc("unknown_next_header")
            # RFC 8200 (4): an unrecognised Next Header is a Parameter Problem, code 1
            if not ip6.is_multicast(dst):
                self.send_error(hdr, packet, data, icmpv6.PARAM_PROBLEM, 1, hdr.nh_offset)

    def _param_problem(self, packet: memoryview, e: ip6.ParamProblem, link_mc: bool) -> None:
        try:
            hdr = ip6.parse_ipv6_header(packet)
        except ParseError:
            return
        if self.ours(hdr.dst) or hdr.dst in self.groups:
            hdr.proto = -1
            self.send_error(
                hdr, packet, b"", icmpv6.PARAM_PROBLEM, e.code, e.pointer,
                link_multicast=link_mc, multicast_ok=e.multicast_ok,
            )  # fmt: skip

    def send_error(
        self,
        hdr: ip6.IPv6Header,
        packet: Buffer,
        payload: Buffer,
        type_: int,
        code: int,
        rest: int = 0,
        *,
        link_multicast: bool = False,
        multicast_ok: bool = False,
    ) -> bool:
        """Send an ICMPv6 error about a received packet if RFC 4443 (2.4) allows it."""
        ic = self.icmp_counters
        frag = hdr.fragment
        if frag is not None and frag.offset != 0:
            # a reassembled packet whose last fragment was not the first: the quote would
            # lack the upper-layer header (as IPv4 does, RFC 1122 3.2.2)
            ic.inc("error_suppressed")
            return False
        if not icmpv6.error_allowed(hdr, payload, type_, link_multicast, multicast_ok):
            ic.inc("error_suppressed")
            return False
        if not self.errors.allow(self.stack.now()):
            ic.inc("error_rate_limited")  # RFC 4443 (2.4 f)
            return False
        src = self.source_for(hdr.src)
        msg = icmpv6.build_error(type_, code, packet, src, hdr.src, rest)
        try:
            self.send(hdr.src, ip6.NH_ICMPV6, [msg], src=src)
        except OSError:
            return False
        ic.inc(f"errors_sent_type{type_}")
        return True

    def _rx_icmp(self, hdr: ip6.IPv6Header, data: memoryview, src_mac: bytes) -> None:
        c = self.icmp_counters
        try:
            msg = icmpv6.parse_icmpv6(data, hdr.src, hdr.dst, not self.stack.rx_csum_trusted)
        except ParseError as e:
            c.inc(e.reason)
            return
        c.inc("rx_messages")
        t = msg.type
        if t in icmpv6.ND_TYPES:
            self._rx_nd(hdr, msg)
        elif t == icmpv6.ECHO_REQUEST:
            if ip6.is_multicast(hdr.dst) or self.dad.is_tentative(hdr.dst):
                c.inc("echo_to_multicast_ignored")
                return
            c.inc("echo_requests")
            # RFC 4443 (4.2): same identifier, sequence and data, from the address asked
            reply = icmpv6.build_echo_reply_from(msg, hdr.dst, hdr.src)
            try:
                self.send(hdr.src, ip6.NH_ICMPV6, [reply], src=hdr.dst)
            except OSError:
                return
            c.inc("echo_replies_sent")
        elif t == icmpv6.ECHO_REPLY:
            pending = self._pings.pop((msg.ident, msg.seq), None)
            if pending is None or pending[0].done():
                if not self.stack.ping_sockets.input6(hdr, msg, data):
                    c.inc("echo_reply_unmatched")
                return
            c.inc("echo_replies")
            pending[0].set_result(time.perf_counter() - pending[2])
        elif t in icmpv6.MLD_TYPES:
            c.inc("mld_ignored")  # RFC 3810: we join no group a router must know of
        elif msg.is_error:
            self._rx_error(msg)
        else:
            c.inc("other_types")

    def _rx_error(self, msg: icmpv6.Icmpv6Message) -> None:
        c = self.icmp_counters
        try:
            quoted, first8 = icmpv6.parse_error(msg)
        except ParseError as e:
            c.inc(e.reason)
            return
        c.inc("errors_received")
        if not self.ours(quoted.src):
            c.inc("error_not_ours")
            return
        if msg.type == icmpv6.DEST_UNREACH:
            type4, code4 = _DEST_UNREACH4, _ICMP6_TO_ICMP4.get(msg.code, 1)
        elif msg.type == icmpv6.PACKET_TOO_BIG:
            c.inc("packet_too_big")
            self._learn_pmtu(quoted.dst, msg.rest)
            if quoted.proto == IPPROTO_TCP:
                # RFC 8201 (5.2): the packetization layer cuts to the path MTU. TCP's
                # segments carry a partial checksum and may be TSO super-segments, which
                # fragmentation at the source cannot split: TCP itself must send less.
                self.stack.tcp.path_mtu_reduced(quoted, first8, self.path_mtu(quoted.dst))
            return
        else:
            type4, code4 = 11, 0  # time exceeded / parameter problem: soft errors
        if quoted.proto == IPPROTO_UDP:
            self.stack.udp.icmp_error(type4, code4, quoted, first8)
        elif quoted.proto == IPPROTO_TCP:
            self.stack.tcp.icmp_error(type4, code4, quoted, first8)

    def _rx_nd(self, hdr: ip6.IPv6Header, icmp: icmpv6.Icmpv6Message) -> None:
        c = self.icmp_counters
        try:
            msg = nd.parse_nd(icmp, hdr.src, hdr.dst, hdr.hop_limit)
        except ParseError as e:
            c.inc(e.reason)
            return
        now = self.stack.now()
        t = msg.type
        if t == icmpv6.NEIGHBOR_SOLICIT:
            c.inc("ns_received")
            target = msg.target
            if self.dad.is_tentative(target):
                # RFC 4862 (5.4.3): another node's probe for our tentative address
                if hdr.src == ip6.ANY and self.dad.on_conflict(target):
                    c.inc("dad_duplicate")
                return
            if not self.ours(target):
                c.inc("ns_not_for_us")
                return
            self._release(self.neighbors.on_solicit(hdr.src, msg.source_lladdr, now))
            if hdr.src == ip6.ANY:
                # RFC 4861 (7.2.4): a DAD probe for an address in use is answered to all nodes
                self._send_na(target, ip6.ALL_NODES, solicited=False)
            else:
                self._send_na(target, hdr.src, solicited=True, mac=msg.source_lladdr)
        elif t == icmpv6.NEIGHBOR_ADVERT:
            c.inc("na_received")
            if self.dad.on_conflict(msg.target):
                c.inc("dad_duplicate")  # RFC 4862 (5.4.4)
                return
            if self.ours(msg.target):
                c.inc("na_for_our_address")
                return
            self._release(self.neighbors.on_advert(msg, now))
        elif t == icmpv6.ROUTER_ADVERT:
            c.inc("ra_received")
            self.routers.on_advert(hdr.src, msg, now)
            self.mtu = self.routers.mtu
            if msg.reachable_time:
                self.neighbors.reachable_time = msg.reachable_time
            if msg.retrans_timer:
                self.neighbors.retrans_timer = msg.retrans_timer
            self._release(self.neighbors.on_solicit(hdr.src, msg.source_lladdr, now))
        elif t == icmpv6.ROUTER_SOLICIT:
            c.inc("rs_ignored")  # RFC 4861 (6.2.6): only routers answer
        else:
            c.inc("redirect_ignored")
        self._arm()

    # ------------------------------------------------------------ transmit

    def source_for(self, dst: bytes) -> bytes:
        """RFC 6724 in short: link-local for link-local and link-scope multicast
        destinations, the configured address for everything else."""
        if ip6.is_link_local(dst) or (ip6.is_multicast(dst) and dst[1] & 0x0F == 2):
            return self.link_local
        return self.ip_b

    def next_hop(self, dst: bytes) -> bytes | None:
        """The neighbour to send to for ``dst`` (RFC 4861 (5.2)), None if unreachable."""
        if ip6.is_multicast(dst) or ip6.is_link_local(dst):
            return dst
        if dst == ip6.ANY or dst == ip6.LOOPBACK:
            return None
        now = self.stack.now()
        if ip6.prefix_match(dst, self.ip_b, self.prefix_len) or self.routers.on_link(dst, now):
            return dst
        return self.gateway or self.routers.default_router(now)

    def send(
        self,
        dst: bytes,
        proto: int,
        parts: list[Buffer],
        *,
        hop_limit: int = 64,
        src: bytes | None = None,
        vnet: bytes | None = None,
        traffic_class: int = 0,
    ) -> None:
        """Send one IPv6 packet whose payload is ``parts``; OSError(ENETUNREACH) with no
        route. Larger than the MTU, it is fragmented by us, the source (RFC 8200 (5)).
        ``traffic_class`` carries the ECN field TCP chose (RFC 3168 (5))."""
        hop = self.next_hop(dst)
        if hop is None:
            self.counters.inc("no_route")
            raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
        if src is None:
            src = self.source_for(dst)
        if self.dad.is_tentative(src):
            if len(self._tentative_hold) >= 64:
                self.counters.inc("tentative_hold_dropped")
                return
            self._tentative_hold.append((dst, proto, parts, hop_limit, src, vnet, traffic_class))
            return
        length = 0
        for p in parts:
            length += len(p)
        packets: list[list[Buffer]]
        mtu = self.path_mtu(dst)
        if length + ip6.HEADER_LEN > mtu and vnet is None:
            self._ident = (self._ident + 1) & 0xFFFFFFFF
            pieces = ip6.fragment6(
                b"".join(parts), mtu, src, dst, proto, self._ident, hop_limit, traffic_class
            )
            packets = [[h, piece] for h, piece in pieces]
            self.counters.inc("fragmented")
        else:
            hdr = ip6.build_ipv6_header(src, dst, proto, length, hop_limit, traffic_class)
            packets = [[hdr, *parts]]
        self.counters.inc("tx_packets", len(packets))
        now = self.stack.now()
        # One of our own addresses: our MAC, which the stack's send_frame loops back in.
        mac = self.stack.mac_b if self.ours(hop) else self.neighbors.lookup(hop, now)
        if mac is not None:
            for pkt in packets:
                self.stack.send_frame(mac, ETH_P_IPV6, pkt, vnet)
            self._arm()
            return
        for pkt in packets:
            # held with its virtio-net header (a TSO6 super-segment stays one)
            for s in self.neighbors.resolve(hop, (pkt, vnet), now):
                self._send_ns(s.target, s.dst_ip, s.dst_mac)
        self._arm()

    def _learn_pmtu(self, dst: bytes, mtu: int) -> None:
        """RFC 8201 (4): a Packet Too Big lowers the path MTU to ``dst`` (never below
        1280; one above the current value is ignored); the estimate is kept 10 minutes
        (RFC 8201 (4): an increase may be tried after at least 5). At most 1024 paths."""
        mtu = max(ip6.MIN_MTU, mtu)
        if mtu >= self.path_mtu(dst):
            self.icmp_counters.inc("packet_too_big_ignored")
            return
        if len(self.pmtu) >= 1024 and dst not in self.pmtu:
            self.pmtu.pop(next(iter(self.pmtu)))
        self.pmtu[dst] = (mtu, self.stack.now() + 600.0)
        self.counters.inc("pmtu_lowered")

    def path_mtu(self, dst: bytes) -> int:
        """The MTU to use towards ``dst``: the link's, or less as Packet Too Big said.

        A larger packet is fragmented at the source (RFC 8200 (5)) unless it carries a
        virtio-net header (a partial checksum, a TSO super-segment): TCP's connections
        lower their MSS to the path MTU instead (``TcpLayer.path_mtu_reduced``).
        """
        known = self.pmtu.get(dst)
        if known is None:
            return self.mtu
        mtu, expires = known
        if expires <= self.stack.now():
            del self.pmtu[dst]
            return self.mtu
        return min(mtu, self.mtu)

    def _send_icmp(
        self, type_: int, rest: int, body: bytes, src: bytes, dst: bytes, mac: bytes
    ) -> None:
        msg = icmpv6.build_icmpv6(type_, 0, rest, body, src, dst)
        hdr = ip6.build_ipv6_header(src, dst, ip6.NH_ICMPV6, len(msg), nd.ND_HOP_LIMIT)
        self.stack.send_frame(mac, ETH_P_IPV6, [hdr, msg])

    def _send_ns(self, target: bytes, dst: bytes, mac: bytes, dad: bool = False) -> None:
        # RFC 4862 (5.4.2): a DAD probe comes from :: without our link-layer address
        rest, body = nd.build_ns(target, None if dad else self.stack.mac_b)
        src = ip6.ANY if dad else (self.link_local if ip6.is_link_local(target) else self.ip_b)
        if not dad and not self.ours(src):
            src = self.link_local if self.ours(self.link_local) else ip6.ANY
            if src == ip6.ANY:
                rest, body = nd.build_ns(target, None)
        self._send_icmp(icmpv6.NEIGHBOR_SOLICIT, rest, body, src, dst, mac)
        self.icmp_counters.inc("dad_probes_sent" if dad else "ns_sent")

    def _send_na(
        self, target: bytes, dst: bytes, *, solicited: bool, mac: bytes | None = None
    ) -> None:
        rest, body = nd.build_na(target, self.stack.mac_b, solicited=solicited)
        if mac is None:
            mac = self.neighbors.lookup(dst, self.stack.now())
        if mac is None:
            # RFC 4861 (7.2.4): no link-layer address for the solicitor: resolve first
            self.send(dst, ip6.NH_ICMPV6, [icmpv6.build_icmpv6(
                icmpv6.NEIGHBOR_ADVERT, 0, rest, body, target, dst)], hop_limit=255, src=target)  # fmt: skip
            return
        self._send_icmp(icmpv6.NEIGHBOR_ADVERT, rest, body, target, dst, mac)
        self.icmp_counters.inc("na_sent")

    def _send_rs(self) -> None:
        src = self.link_local if self.ours(self.link_local) else ip6.ANY
        rest, body = nd.build_rs(self.stack.mac_b if src != ip6.ANY else None)
        self._send_icmp(icmpv6.ROUTER_SOLICIT, rest, body, src, ip6.ALL_ROUTERS,
                        ip6.multicast_mac(ip6.ALL_ROUTERS))  # fmt: skip
        self.icmp_counters.inc("rs_sent")

    def _release(self, released: list[tuple[bytes, object]]) -> None:
        for mac, held in released:
            parts, vnet = cast("tuple[list[Buffer], bytes | None]", held)
            self.stack.send_frame(mac, ETH_P_IPV6, parts, vnet)

    # ---------------------------------------------------------------- timers

    def _arm(self) -> None:
        deadlines = [
            d
            for d in (
                self.neighbors.next_deadline(),
                self.dad.next_deadline(),
                self.routers.next_deadline(),
                self.reassembler.next_deadline(),
            )
            if d is not None
        ]
        self.stack.arm_timer("ipv6", min(deadlines) if deadlines else None, self._on_timer)

    def _on_timer(self) -> None:
        now = self.stack.now()
        solicits, failed = self.neighbors.poll(now)
        for s in solicits:
            self._send_ns(s.target, s.dst_ip, s.dst_mac)
        for ip, dropped in failed:
            self.counters.inc("nd_failed_drops", len(dropped))
            self._fail(ip)
        probes, done = self.dad.poll(now)
        for target in probes:
            group = ip6.solicited_node(target)
            self._send_ns(target, group, ip6.multicast_mac(group), dad=True)
        if done:
            # RFC 4861 (7.2.6) would allow unsolicited advertisements now; none are sent
            self.counters.inc("dad_done", len(done))
        if self._tentative_hold and (done or self.dad.duplicates):
            held, self._tentative_hold = self._tentative_hold, []
            for dst, proto, parts, hop_limit, src, vnet, tclass in held:
                if src in self.dad.duplicates:
                    self.counters.inc("tentative_hold_dropped")
                    continue
                with contextlib.suppress(OSError):
                    self.send(
                        dst, proto, parts, hop_limit=hop_limit, src=src, vnet=vnet,
                        traffic_class=tclass,
                    )  # fmt: skip
        if self.routers.poll(now):
            self._send_rs()
        expired = self.reassembler.poll(now)
        if expired:
            self.counters.inc("reassembly_timeouts", expired)
        self._arm()

    def _fail(self, neighbor: bytes) -> None:
        self.stack.notify_unreachable(neighbor)
        for key, (fut, dst, _sent) in list(self._pings.items()):
            if not fut.done() and self.next_hop(dst) == neighbor:
                fut.set_exception(OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH)))
                del self._pings[key]

    # ------------------------------------------------------------------ ping

    async def ping(self, dst: bytes, ident: int, *, timeout: float, payload: bytes) -> float:
        """One ICMPv6 echo request to ``dst``; the round-trip time in seconds."""
        loop = self.stack.loop
        assert loop is not None
        self._ping_seq = (self._ping_seq + 1) & 0xFFFF
        key = (ident, self._ping_seq)
        fut: asyncio.Future[float] = loop.create_future()
        self._pings[key] = (fut, dst, time.perf_counter())
        self.icmp_counters.inc("echo_requests_sent")
        try:
            src = self.source_for(dst)
            msg = icmpv6.build_icmpv6(
                icmpv6.ECHO_REQUEST, 0, (ident << 16) | key[1], payload, src, dst
            )
            self.send(dst, ip6.NH_ICMPV6, [msg], src=src)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pings.pop(key, None)

    def cancel_pings(self) -> None:
        for fut, _dst, _sent in self._pings.values():
            if not fut.done():
                fut.cancel()

    # ----------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """Counters of IPv6, ICMPv6 and ND, and the neighbour cache."""
        return {
            "address": f"{self.ip}/{self.prefix_len}",
            "link_local": ip6.ip6_to_str(self.link_local),
            "ready": self.ready,
            "duplicates": [ip6.ip6_to_str(a) for a in self.dad.duplicates],
            "ip": dict(self.counters)
            | {f"reassembly_{k}": v for k, v in self.reassembler.counters.items()},
            "icmp": dict(self.icmp_counters),
            "nd": dict(self.neighbors.counters) | {"entries": len(self.neighbors)},
            "neighbors": {
                ip6.ip6_to_str(ip): [state, mac.hex(":") if mac else None]
                for ip, (state, mac) in list(self.neighbors.entries().items())[:64]
            },
        }
