"""Ping sockets on the stack: Linux's ICMP datagram sockets.

``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`` (and ``AF_INET6`` with ``IPPROTO_ICMPV6``)
is what iputils ``ping`` opens first, and what lets a program ping without raw sockets.
Linux binds such a socket to an echo *identifier* the way a UDP socket is bound to a
port. The program writes echo requests (ICMP header and data). Each one leaves with the
socket's identifier and a computed checksum (``proto/icmp.echo_request_as``,
``proto/icmpv6.echo_request_as``). The echo replies that carry the identifier come back
to it whole (ICMP header and data, no IP header), from address (sender, 0).

``PingLayer`` keeps the endpoints by identifier in the same per-family table UDP uses;
each endpoint is a :class:`~anp_async.transport.udp.DatagramTransport` whose ``sendto``
sends echo requests. The stack hands it the echo replies that none of its own pings
(``Stack.ping``) waits for.
"""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..counters import Counters
from ..proto import icmp, icmpv6
from ..proto.errors import ParseError
from ..proto.ipv4 import IPv4Header
from ..proto.ipv6 import NH_ICMPV6, IPv6Header
from ..proto.numbers import IPPROTO_ICMP
from ..proto.ports import FamilyPorts, pick_free
from .errors import oserror
from .resolve import addr_to_bytes, resolve_ip, resolve_ip_sync, sockaddr
from .udp import DatagramTransport, remote_of

if TYPE_CHECKING:
    from .netstack import NetStack



class PingLayer:
    """The ping endpoints of one stack, by family and echo identifier."""

    def __init__(self, stack: NetStack, reserved_ident: int | None = None) -> None:
        self.stack = stack
        #: Endpoints by identifier, an IPv4 and an IPv6 table (an endpoint is in one).
        self.ports: FamilyPorts[PingTransport] = FamilyPorts()
        self.counters = Counters()
        #: The identifier of the stack's own pings, never handed to a socket.
        self.reserved_ident = reserved_ident
        #: A multi-queue worker's rule (None: any): may an identifier be picked -- one
        #: whose replies the TAP steers to this worker's queue (``mq/worker.py``).
        self.ident_ok: Callable[[int], bool] | None = None

    def pick_ident(self) -> int:
        """A free echo identifier (Linux picks one for an unbound ping socket)."""
        ok = self.ident_ok
        ident = pick_free(
            self.ports, range(1, 0x10000),
            lambda i: i != self.reserved_ident and (ok is None or ok(i)), random.choice,
        )  # fmt: skip
        if ident is None:
            raise oserror(errno.EADDRINUSE)
        return ident

    async def create_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        *,
        v6: bool = False,
    ) -> tuple[PingTransport, asyncio.DatagramProtocol]:
        """A ping endpoint (ICMPv6 with ``v6``) with the identifier ``local_addr[1]`` (0 or
        none: a free one); ``remote_addr`` connects it (that host's replies only)."""
        ident = 0
        if local_addr is not None:
            host, ident = local_addr[0], int(local_addr[1])
            ours = ("::", self.stack.ip6) if v6 else ("0.0.0.0", self.stack.ip)
            if await resolve_ip(host) not in ours:
                raise oserror(errno.EADDRNOTAVAIL)
            if not 0 <= ident <= 0xFFFF:
                raise oserror(errno.EINVAL)
        if v6 and self.stack.ip6_b is None:
            raise oserror(errno.EAFNOSUPPORT)
        remote = None
        if remote_addr is not None:
            remote = (addr_to_bytes(await resolve_ip(remote_addr[0])), 0)
        if ident == 0:
            ident = self.pick_ident()
        elif self.ports.conflict(ident, v4=not v6, v6=v6) or ident == self.reserved_ident:
            raise oserror(errno.EADDRINUSE)
        protocol = protocol_factory()
        transport = PingTransport(self, ident, remote, protocol, False, v6)
        self.ports.add(ident, transport, v4=not v6, v6=v6)
        protocol.connection_made(transport)
        return transport, protocol

    def input(self, hdr: IPv4Header, reply: icmp.IcmpMessage, message: memoryview) -> bool:
        """An IPv4 echo reply (``message`` the whole ICMP message) that no ping of the
        stack's own waits for: True when an endpoint took it."""
        return self._deliver(hdr.src, reply.ident, message, hdr.ttl, False)

    def input6(
        self, hdr: IPv6Header, reply: icmpv6.Icmpv6Message, message: memoryview
    ) -> bool:
        """An ICMPv6 echo reply, as :meth:`input`."""
        return self._deliver(hdr.src, reply.ident, message, hdr.hop_limit, True)

    def _deliver(self, src: bytes, ident: int, message: memoryview, ttl: int, v6: bool) -> bool:
        ep = self.ports.get(ident, v6, (src, 0), remote_of)  # (a connected one: (addr, 0))
        if ep is None:
            return False
        self.counters.inc("echo_replies_delivered")
        ep._deliver(bytes(message), sockaddr(src, 0), ttl)
        return True

    def stats(self) -> dict[str, int]:
        """Counters and the endpoint count."""
        return dict(self.counters) | {"endpoints": len(self.ports.items())}

    def close_all(self) -> None:
        for _, ep in self.ports.items():
            ep.abort()


class PingTransport(DatagramTransport):
    """A ping endpoint: ``sendto(echo_request, (host, port))`` (the port is ignored, as
    Linux ignores it) sends the request with this endpoint's identifier; errors (not an
    echo request: EINVAL; no route: ENETUNREACH) go to ``error_received``."""

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if self._closing:
            return
        if addr is None:
            if self._remote is None:
                raise ValueError("Invalid address: must be a (host, port) when not connected")
            dst = self._remote[0]
        else:
            dst = addr_to_bytes(resolve_ip_sync(addr[0]))
        layer = self._layer
        stack = layer.stack
        if len(dst) == 4 and stack.iface.is_broadcast(dst) and not self._allow_broadcast:
            self._protocol.error_received(oserror(errno.EACCES))
            return
        try:
            if len(dst) == 16:
                src = stack.ip6_source_for(dst)
                if src is None:
                    raise oserror(errno.ENETUNREACH)
                message = icmpv6.echo_request_as(data, self._port, src, dst)
                proto = NH_ICMPV6
            else:
                message = icmp.echo_request_as(data, self._port)
                proto = IPPROTO_ICMP
        except ParseError as e:
            layer.counters.inc(e.reason)
            self._protocol.error_received(oserror(errno.EINVAL))
            return
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        try:
            stack.send_ip(dst, proto, [message], **self._ip_fields(dst))
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        layer.counters.inc("echo_requests_sent")
