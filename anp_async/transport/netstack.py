"""The narrow interface between the transports and the stack below them.

The transports never import ``stack.py``: they are handed an object that has these
members, and :class:`anp_async.stack.Stack` is one (as ``control.ControlledStack`` is the
control socket's view of it). What a transport may ask of the stack is therefore exactly
what is written here: addresses, the clock and loop, the receive-batch state, and the two
ways down (``send_ip`` for any IP payload, ``send_tcp`` for a TCP segment, where the stack
applies the NIC's offloads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..proto.ipv4 import Interface
from ..proto.ipv6 import IPv6Header
from ..proto.tcp.fastpath import HeaderTemplate
from ..proto.tcp.segment import TcpSegment

if TYPE_CHECKING:
    from .server import Server
    from .tcp import TcpLayer

Buffer = bytes | bytearray | memoryview


class TimerHold(Protocol):
    """The stack's timer gate (``modes/timergate.py``) as a TCP timer sees it."""

    def hold(self, callback: Callable[[], None]) -> bool:
        """True: frames wait unread, ``callback`` runs once they are read; False: run
        the timer now."""


class NetStack(Protocol):
    """What the TCP and UDP layers need from the stack."""

    @property
    def ip(self) -> str:
        """The stack's address, dotted."""

    @property
    def ip_b(self) -> bytes:
        """The stack's address, 4 bytes."""

    @property
    def ip6(self) -> str | None:
        """The stack's IPv6 address as text, None without one."""

    @property
    def ip6_b(self) -> bytes | None:
        """The stack's IPv6 address, 16 bytes, None without one."""

    def next_hop(self, dst: bytes) -> bytes | None:
        """The neighbour a packet to ``dst`` (4 or 16 bytes) goes to; None: unreachable."""

    def ip6_source_for(self, dst: bytes) -> bytes | None:
        """The IPv6 source address of a packet to ``dst``; None without IPv6."""

    @property
    def mtu(self) -> int:
        """The link MTU (TCP derives its MSS from it)."""

    @property
    def iface(self) -> Interface:
        """The interface's prefix and gateway: next hops and broadcast addresses."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the stack runs on (None before ``start()``)."""

    @property
    def timer_gate(self) -> TimerHold | None:
        """Asked before a TCP timer acts (None before ``start()``)."""

    @property
    def in_rx(self) -> bool:
        """True while a receive batch is being processed (output waits for its end)."""

    @property
    def rx_now(self) -> float:
        """The clock when the receive batch being processed began (valid while ``in_rx``)."""

    @property
    def rx_csum_trusted(self) -> bool:
        """The frame being processed has a transport checksum the NIC vouches for."""

    @property
    def icmp_port_unreachable(self) -> bool:
        """Answer datagrams to closed UDP ports with ICMP port unreachable."""

    def now(self) -> float:
        """The stack's clock in seconds."""

    def send_ip(
        self, dst: bytes, proto: int, parts: list[Buffer], *, ttl: int = 64, tos: int = 0
    ) -> None:
        """Send one IP datagram, IPv6 for a 16-byte ``dst`` (``ttl``: the TTL or hop
        limit, ``tos``: the TOS byte or traffic class; OSError(ENETUNREACH) when no route
        leads to ``dst``)."""

    def send_tcp(self, dst: bytes, seg: TcpSegment, mss: int = 0, dscp: int = 0) -> bool:
        """Send one TCP segment (``dscp``: the TOS byte's upper six bits); True when the
        NIC cuts it into ``mss``-sized ones (TSO)."""

    @property
    def mac_b(self) -> bytes:
        """The stack's MAC address, 6 bytes (the receive fast path matches it)."""

    @property
    def fast_path(self) -> bool:
        """The established-connection fast path is on (``anp trace`` turns it off)."""

    def tcp_template(self, dst: bytes, sport: int, dport: int) -> HeaderTemplate | None:
        """A header template for one IPv4 connection's segments (None: not templated)."""

    def send_templated(self, tpl: HeaderTemplate, seg: TcpSegment, mss: int, now: float) -> int:
        """Send ``seg`` with ``tpl``: ``TX_SENT``, ``TX_TSO`` (a super-segment for the NIC
        to cut), or ``TX_NOT_TEMPLATED`` (0, nothing sent): use ``send_tcp``."""

    def add_unreachable_listener(self, cb: Callable[[bytes], None]) -> None:
        """Call ``cb(next_hop)`` when ARP (or IPv6 Neighbor Discovery) gives up on a next hop."""

    def send_icmp6_error(
        self, hdr: IPv6Header, packet: Buffer, payload: Buffer, type_: int, code: int
    ) -> bool:
        """Answer a received IPv6 packet with an ICMPv6 error where RFC 4443 (2.4) allows."""


class SocketStack(Protocol):
    """What the stream helpers and the stack event loops need: the asyncio-style calls."""

    @property
    def ip(self) -> str: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...

    @property
    def tcp(self) -> TcpLayer: ...

    async def create_connection(
        self, protocol_factory: Callable[[], Any], host: str, port: int, **kwargs: Any
    ) -> tuple[asyncio.Transport, Any]: ...

    async def create_server(
        self,
        protocol_factory: Callable[[], Any],
        host: str | None = None,
        port: int = 0,
        **kwargs: Any,
    ) -> Server: ...

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], Any],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.DatagramTransport, Any]: ...
