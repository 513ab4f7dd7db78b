"""UDP on the stack: port bindings and asyncio's DatagramTransport contract.

``UdpLayer`` demultiplexes incoming datagrams to endpoints by local port and sends
outgoing ones through the host (the :class:`~anp_async.stack.Stack`). Each endpoint is a
:class:`DatagramTransport` that behaves like asyncio's: ``sendto``, ``close`` / ``abort``,
``get_extra_info``, ``connection_made`` then ``datagram_received`` / ``error_received``
and ``connection_lost`` exactly once.
"""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import Callable
from socket import (
    AF_INET6,
    IP_TOS,
    IP_TTL,
    IPPROTO_IP,
    IPPROTO_IPV6,
    IPV6_TCLASS,
    IPV6_UNICAST_HOPS,
    SO_BROADCAST,
    SOL_SOCKET,
)
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..counters import Counters
from ..proto import icmp
from ..proto import udp as udp_proto
from ..proto.errors import ParseError
from ..proto.ipv4 import IPv4Header
from ..proto.ipv6 import IPv6Header
from ..proto.numbers import IPPROTO_ICMP, IPPROTO_UDP
from ..proto.ports import FamilyPorts, pick_free
from .errors import oserror
from .resolve import (
    addr_to_bytes,
    bound_name,
    endpoint_name,
    resolve_ip,
    resolve_ip_sync,
    sockaddr,
)
from .sockobj import SocketHolder

if TYPE_CHECKING:
    from .netstack import NetStack

EPHEMERAL_PORTS = range(32768, 61000)  # Linux's default ip_local_port_range



class EndpointLayer(Protocol):
    """What a :class:`DatagramTransport` needs of the layer that keeps it (``UdpLayer``,
    or ``ping.PingLayer`` for ICMP echo sockets)."""

    stack: NetStack
    ports: FamilyPorts[Any]
    counters: Counters


class UdpLayer:
    """All UDP endpoints of one stack."""

    def __init__(self, stack: NetStack) -> None:
        self.stack = stack
        # Endpoints by port and family: an IPv4 one and an IPv6-only one (a program's
        # AF_INET and IPV6_V6ONLY sockets) may share a port, as on Linux.
        self.ports: FamilyPorts[DatagramTransport] = FamilyPorts()
        self.counters = Counters()
        #: A multi-queue worker's rules (None: any port, every datagram is ours):
        #: ``port_ok(lport, rport)`` -- may an ephemeral port be chosen for a peer's port
        #: (None: unconnected); ``misdirected(dport, ip_packet)`` -- hand a datagram for a
        #: port bound nowhere here on to its owner (True if it did).
        self.port_ok: Callable[[int, int | None], bool] | None = None
        self.misdirected: Callable[[int, memoryview], bool] | None = None

    def stats(self) -> dict[str, Any]:
        """Counters, the endpoint count and (for ``anp ss``) one entry per endpoint."""
        ip, ip6 = self.stack.ip, self.stack.ip6
        endpoints = self.ports.entries()
        sockets = [
            {
                "state": "ESTABLISHED" if ep._remote is not None else "UNCONN",
                "local": bound_name(ip, ip6, port, v4, v6),
                "remote": endpoint_name(*ep._remote) if ep._remote else "*:*",
            }
            for port, ep, v4, v6 in endpoints[:1000]
        ]
        return dict(self.counters) | {"endpoints": len(endpoints), "sockets": sockets}

    def pick_port(self, rport: int | None = None) -> int:
        """A free ephemeral port (that ``port_ok`` accepts for peer port ``rport``)."""
        ok = self.port_ok
        port = pick_free(
            self.ports, EPHEMERAL_PORTS, lambda p: ok is None or ok(p, rport), random.choice
        )
        if port is None:
            raise oserror(errno.EADDRINUSE)
        return port

    async def create_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        *,
        reuse_port: bool | None = None,
        allow_broadcast: bool | None = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: Any = None,
        v4: bool = True,
        v6: bool = True,
        share_port: bool = False,
        **_: Any,
    ) -> tuple[DatagramTransport, asyncio.DatagramProtocol]:
        """asyncio's create_datagram_endpoint on the stack. The endpoint hears both
        families unless ``v4``/``v6`` (this stack's own keywords) leave one out: the
        preload library passes what a program's socket hears (AF_INET: IPv4; AF_INET6
        with IPV6_V6ONLY: IPv6), so two such sockets can share a port. ``share_port``
        (also the stack's own; the library passes a socket's SO_REUSEADDR) lets
        endpoints that all set it bind one port in one family, as Linux does: a datagram
        reaches the one connected to its source, else the newest unconnected one.
        ``reuse_port`` (SO_REUSEPORT) shares the port too, and its unconnected endpoints
        are a group: each flow's datagrams go to the one its hash picks."""
        if sock is not None:
            raise ValueError("sock= is not supported on the stack (there is no kernel socket)")
        port = 0
        if local_addr is not None:
            host, port = local_addr[0], int(local_addr[1])
            addr = await resolve_ip(host, family)
            if addr not in ("0.0.0.0", "::", self.stack.ip, self.stack.ip6):
                raise oserror(errno.EADDRNOTAVAIL)
            if ":" in addr:
                family = AF_INET6
        remote: tuple[bytes, int] | None = None
        if remote_addr is not None:
            rhost = await resolve_ip(remote_addr[0], family)
            remote = (addr_to_bytes(rhost), int(remote_addr[1]))
            if len(remote[0]) == 16:
                family = AF_INET6
        if not (v4 or v6):
            raise ValueError("an endpoint must hear IPv4, IPv6 or both")
        share_port = share_port or bool(reuse_port)
        if port == 0:
            port = self.pick_port(remote[1] if remote is not None else None)
        elif self.ports.conflict(port, v4=v4, v6=v6, share=share_port):
            raise oserror(errno.EADDRINUSE)
        protocol = protocol_factory()
        transport = DatagramTransport(
            self, port, remote, protocol, bool(allow_broadcast), family == AF_INET6
        )
        transport.reuseport = bool(reuse_port)
        self.ports.add(port, transport, v4=v4, v6=v6, share=share_port)
        protocol.connection_made(transport)
        return transport, protocol

    def input(
        self, hdr: IPv4Header | IPv6Header, data: memoryview, ip_packet: memoryview
    ) -> None:
        """One UDP datagram from the IP layer (``ip_packet`` is kept for ICMP quoting)."""
        try:
            sport, dport, payload = udp_proto.parse_udp(
                data, hdr.src, hdr.dst, not self.stack.rx_csum_trusted
            )
        except ParseError as e:
            self.counters.inc(e.reason)
            return
        v6 = isinstance(hdr, IPv6Header)
        ep = self.ports.get(dport, v6, (hdr.src, sport), remote_of, in_group=in_reuseport_group)
        if ep is None:
            if self.ports.get(dport, v6) is not None:
                # Held only by sockets connected to other peers: a closed port to this one.
                self.counters.inc("not_from_connected_peer")
            if self.misdirected is not None and self.misdirected(dport, ip_packet):
                self.counters.inc("handed_on")
                return
            self.counters.inc("no_port")
            stack = self.stack
            if isinstance(hdr, IPv6Header):
                # RFC 4443 (3.1): port unreachable, code 4, where RFC 4443 (2.4) allows
                if stack.icmp_port_unreachable and hdr.dst == stack.ip6_b:
                    if stack.send_icmp6_error(hdr, ip_packet, data, 1, 4):
                        self.counters.inc("port_unreachable_sent")
                return
            if stack.icmp_port_unreachable and hdr.dst == stack.ip_b:
                # RFC 1122 3.2.2.1 / 4.1.3.1: a datagram to a closed port gets a port
                # unreachable -- unless RFC 1122 3.2.2 forbids an error about it (a source
                # that is no single host; a reassembled datagram whose last fragment was
                # not the first, whose quote would lack the UDP header).
                if not icmp.error_allowed(hdr, data):
                    self.counters.inc("port_unreachable_suppressed")
                    return
                msg = icmp.build_dest_unreachable(icmp.PORT_UNREACH, ip_packet[: hdr.total_length])
                try:
                    stack.send_ip(hdr.src, IPPROTO_ICMP, [msg])
                except OSError:  # an off-link sender and no gateway: no way back
                    self.counters.inc("port_unreachable_no_route")
                    return
                self.counters.inc("port_unreachable_sent")
            return
        self.counters.inc("rx_datagrams")
        ttl = hdr.ttl if isinstance(hdr, IPv4Header) else hdr.hop_limit
        ep._deliver(bytes(payload), sockaddr(hdr.src, sport), ttl)

    def icmp_error(
        self, type_: int, code: int, quoted: IPv4Header | IPv6Header, first8: memoryview
    ) -> None:
        """An ICMP error quoting one of our datagrams: reported to connected endpoints."""
        if len(first8) < 4:
            return
        sport = int.from_bytes(first8[0:2], "big")
        dport = int.from_bytes(first8[2:4], "big")
        remote = (bytes(quoted.dst), dport)
        ep = self.ports.get(sport, len(quoted.dst) == 16, remote, remote_of)
        if ep is None or ep._remote != remote:
            self.counters.inc("icmp_error_unmatched")
            return  # like Linux: only connected sockets hear about ICMP errors
        self.counters.inc("icmp_errors")
        if type_ == icmp.DEST_UNREACH and code == icmp.PORT_UNREACH:
            exc: OSError = ConnectionRefusedError(*oserror(errno.ECONNREFUSED).args)
        else:
            exc = oserror(errno.EHOSTUNREACH)
        ep._protocol.error_received(exc)

    def close_all(self) -> None:
        for _, ep in self.ports.items():
            ep.abort()


def in_reuseport_group(ep: DatagramTransport) -> bool:
    """Did the endpoint set SO_REUSEPORT (the port table's ``in_group``)?"""
    return ep.reuseport


def remote_of(ep: DatagramTransport) -> tuple[bytes, int] | None:
    """The peer a (connected) endpoint hears alone, None if it hears anyone (the port
    table's ``remote_of``)."""
    return ep._remote


class DatagramTransport(asyncio.DatagramTransport):
    """A UDP endpoint on the stack with asyncio's DatagramTransport contract."""

    def __init__(
        self,
        layer: EndpointLayer,
        port: int,
        remote: tuple[bytes, int] | None,
        protocol: asyncio.DatagramProtocol,
        allow_broadcast: bool,
        family6: bool = False,
    ) -> None:
        super().__init__()
        self._layer = layer
        self._port = port
        self._remote = remote
        #: SO_REUSEPORT: unconnected, it shares its port's datagrams with its group.
        self.reuseport = False
        self._protocol = protocol
        self._allow_broadcast = allow_broadcast
        self._closing = False
        self._lost = False
        stack = layer.stack
        self._extra: dict[str, Any] = {
            "sockname": sockaddr(stack.ip6_b or bytes(16), port) if family6 else (stack.ip, port),
            "peername": sockaddr(remote[0], remote[1]) if remote else None,
        }
        self._socket = SocketHolder("udp")
        self._sockopts: dict[tuple[int, int], int] = {}
        #: The TTL of the datagram being delivered (see ``_deliver``).
        self.rx_ttl = 0
        #: IP_TTL / IPV6_UNICAST_HOPS and IP_TOS / IPV6_TCLASS, by family (IPv6: True).
        self._hops = {False: 64, True: 64}
        self._classes = {False: 0, True: 0}

    # asyncio.BaseTransport
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._socket.get(self)
        value = self._extra.get(name, default)
        return default if value is None else value

    def is_closing(self) -> bool:
        return self._closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        # asyncio's signature says BaseProtocol; a datagram transport's is a DatagramProtocol.
        self._protocol = cast(asyncio.DatagramProtocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._layer.ports.remove(self._port, self)
        assert self._layer.stack.loop is not None
        self._layer.stack.loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        self.close()

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._protocol.connection_lost(exc)

    # asyncio.DatagramTransport
    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._closing:
            return  # asyncio ignores sends on a closing transport
        if addr is None:
            if self._remote is None:
                raise ValueError(
                    "Invalid address: must be None or a (host, port) with a connected transport"
                )
            dst, dport = self._remote
        else:
            dst, dport = addr_to_bytes(resolve_ip_sync(addr[0])), int(addr[1])
            if self._remote is not None and (dst, dport) != self._remote:
                raise ValueError(
                    f"Invalid address: must be None or {self.get_extra_info('peername')}"
                )
        stack = self._layer.stack
        if len(dst) == 4 and stack.iface.is_broadcast(dst) and not self._allow_broadcast:
            self._protocol.error_received(oserror(errno.EACCES))
            return
        payload = bytes(data) if not isinstance(data, bytes) else data
        if len(payload) > udp_proto.MAX_PAYLOAD - 20:
            self._protocol.error_received(oserror(errno.EMSGSIZE))
            return
        src = stack.ip_b if len(dst) == 4 else (stack.ip6_b or bytes(16))
        hdr = udp_proto.build_udp_header(self._port, dport, src, dst, payload)
        try:
            stack.send_ip(dst, IPPROTO_UDP, [hdr, payload], **self._ip_fields(dst))
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        self._layer.counters.inc("tx_datagrams")

    def connect(self, remote: tuple[str, int] | None) -> None:
        """Associate with one peer, or none, as connect() on a UDP socket does (the socket
        API of preloaded programs uses it): only that peer is heard and sent to by default,
        and only its ICMP errors are reported."""
        self._remote = (addr_to_bytes(remote[0]), int(remote[1])) if remote is not None else None

    def _apply_sockopt(self, level: int, optname: int, value: int) -> None:
        """setsockopt() on the socket-like object (the socket API of preloaded programs
        uses it too): SO_BROADCAST, and the IP header fields of what this endpoint sends,
        as Linux takes them (IP_TTL -1 and IPV6_UNICAST_HOPS -1: the default; out of
        range: ignored here, EINVAL on Linux)."""
        key = (level, optname)
        if key in ((IPPROTO_IP, IP_TTL), (IPPROTO_IPV6, IPV6_UNICAST_HOPS)):
            if value == -1 or 1 <= value <= 255:
                self._hops[level == IPPROTO_IPV6] = 64 if value == -1 else value
        elif key in ((IPPROTO_IP, IP_TOS), (IPPROTO_IPV6, IPV6_TCLASS)):
            if -1 <= value <= 255:
                self._classes[level == IPPROTO_IPV6] = max(0, value)
        elif key == (SOL_SOCKET, SO_BROADCAST):
            self._allow_broadcast = bool(value)

    def _ip_fields(self, dst: bytes) -> dict[str, int]:
        """``send_ip``'s TTL and TOS for a datagram to ``dst`` (its family's options)."""
        v6 = len(dst) == 16
        return {"ttl": self._hops[v6], "tos": self._classes[v6]}

    def get_write_buffer_size(self) -> int:
        return 0

    def _deliver(
        self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int], ttl: int = 0
    ) -> None:
        if not self._closing:
            # While datagram_received runs, ``rx_ttl`` is the datagram's TTL (hop limit):
            # the socket API of preloaded programs hands it on for IP_RECVTTL.
            self.rx_ttl = ttl
            self._protocol.datagram_received(data, addr)
