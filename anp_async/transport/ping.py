"""Ping sockets on the stack: Linux's ICMP datagram sockets.

``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`` is what iputils ``ping`` opens first (and
what lets a program ping without raw sockets). Linux binds such a socket to an echo
*identifier* the way a UDP socket is bound to a port. The program writes echo requests
(ICMP header and data). Each one leaves with the socket's identifier and a computed
checksum (``proto/icmp.echo_request_as``). The echo replies that carry the identifier
come back to it whole (ICMP header and data, no IP header), from address (sender, 0).

``PingLayer`` keeps the endpoints by identifier in the same per-family table UDP uses;
each endpoint is a :class:`~anp_async.transport.udp.DatagramTransport` whose ``sendto``
sends echo requests. The stack hands it the echo replies that none of its own pings
(``Stack.ping``) waits for.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..counters import Counters
from ..proto import icmp
from ..proto.errors import ParseError
from ..proto.ipv4 import IPv4Header
from ..proto.numbers import IPPROTO_ICMP
from ..proto.ports import FamilyPorts, pick_free
from .resolve import addr_to_bytes, addr_to_str, resolve_ip, resolve_ip_sync
from .udp import DatagramTransport

if TYPE_CHECKING:
    from .netstack import NetStack


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class PingLayer:
    """The ping endpoints of one stack (IPv4), by echo identifier."""

    def __init__(self, stack: NetStack, reserved_ident: int | None = None) -> None:
        self.stack = stack
        #: Endpoints by identifier (IPv4 only: the table's IPv6 side stays empty).
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
            raise _oserror(errno.EADDRINUSE)
        return ident

    async def create_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        **_: Any,
    ) -> tuple[PingTransport, asyncio.DatagramProtocol]:
        """A ping endpoint with the identifier ``local_addr[1]`` (0 or none: a free one);
        ``remote_addr`` connects it (only that host's replies, sent there by default)."""
        ident = 0
        if local_addr is not None:
            host, ident = local_addr[0], int(local_addr[1])
            if await resolve_ip(host) not in ("0.0.0.0", self.stack.ip):
                raise _oserror(errno.EADDRNOTAVAIL)
            if not 0 <= ident <= 0xFFFF:
                raise _oserror(errno.EINVAL)
        remote = None
        if remote_addr is not None:
            remote = (addr_to_bytes(await resolve_ip(remote_addr[0])), 0)
        if ident == 0:
            ident = self.pick_ident()
        elif self.ports.conflict(ident, v6=False) or ident == self.reserved_ident:
            raise _oserror(errno.EADDRINUSE)
        protocol = protocol_factory()
        transport = PingTransport(self, ident, remote, protocol, False)
        self.ports.add(ident, transport, v6=False)
        protocol.connection_made(transport)
        return transport, protocol

    def input(self, hdr: IPv4Header, reply: icmp.IcmpMessage, message: memoryview) -> bool:
        """An echo reply (``message`` the whole ICMP message, ``hdr`` its IP header) that
        no ping of the stack's own waits for: True when an endpoint took it."""
        src = hdr.src
        ep = self.ports.get(reply.ident, False, (src, 0), _remote_of)
        if ep is None or (ep._remote is not None and ep._remote[0] != src):
            return False
        self.counters.inc("echo_replies_delivered")
        ep._deliver(bytes(message), (addr_to_str(src), 0), hdr.ttl)
        return True

    def stats(self) -> dict[str, int]:
        """Counters and the endpoint count."""
        return dict(self.counters) | {"endpoints": len(self.ports.items())}

    def close_all(self) -> None:
        for _, ep in self.ports.items():
            ep.abort()


def _remote_of(ep: PingTransport) -> tuple[bytes, int] | None:
    return ep._remote


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
        try:
            message = icmp.echo_request_as(data, self._port)
        except ParseError as e:
            layer.counters.inc(e.reason)
            self._protocol.error_received(_oserror(errno.EINVAL))
            return
        stack = layer.stack
        if stack.iface.is_broadcast(dst) and not self._allow_broadcast:
            self._protocol.error_received(_oserror(errno.EACCES))
            return
        try:
            stack.send_ip(dst, IPPROTO_ICMP, [message])
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        layer.counters.inc("echo_requests_sent")
