"""TCP on the stack: demultiplexing, listeners, and asyncio's Transport contract.

Three pieces:

- :class:`TcpLayer` puts one stack's TCP on asyncio: it parses segments for the sans-I/O
  :class:`~anp_async.proto.tcp.host.TcpHost` (connection table, listeners, SYN cookies,
  RST for closed ports, ICMP checks, port choice), transmits what the host answers, and
  makes the endpoints of the connections the host opens.
- :class:`TcpEndpoint` is the glue around one sans-I/O ``TcpConnection``: it transmits
  what the engine outputs, keeps one loop timer at the engine's next deadline, and turns
  the engine's events into calls on the transport. The endpoint outlives the transport
  (FIN_WAIT, TIME_WAIT go on after ``close()``, as in the kernel).
- :class:`TcpTransport` is what protocols see: asyncio's ``Transport`` with write-buffer
  limits, pause/resume reading (which closes the advertised window: the engine's receive
  buffer fills because nobody reads it), ``write_eof``, ``close`` vs ``abort`` and
  ``connection_lost`` called exactly once, from one place.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..counters import Counters
from ..proto.errors import ParseError
from ..proto.ipv4 import IPv4Header
from ..proto.ipv6 import IPv6Header
from ..proto.tcp.config import ChallengeAckLimiter, TcpConfig
from ..proto.tcp.connection import TcpConnection, TcpState
from ..proto.tcp.events import (
    Closed,
    CloseReason,
    Connected,
    DataReceived,
    EofReceived,
    SendSpace,
    TcpEvent,
)
from ..proto.tcp.fastpath import TX_TSO, HeaderTemplate, predict_frame
from ..proto.tcp.host import Key, Listener, TcpHost
from ..proto.tcp.isn import IsnGenerator
from ..proto.tcp.segment import TcpSegment, parse_tcp
from ..proto.tcp.syncookies import SynCookies
from .errors import oserror
from .resolve import addr_to_bytes, bound_name, endpoint_name, resolve_ip, sockaddr
from .sockobj import SocketHolder
from .tcpinfo import pack_tcp_info

if TYPE_CHECKING:
    from .netstack import NetStack
    from .server import Server

log = logging.getLogger(__name__)

_TCP_KEEPIDLE = getattr(socket, "TCP_KEEPIDLE", 4)
_TCP_KEEPINTVL = getattr(socket, "TCP_KEEPINTVL", 5)
_TCP_KEEPCNT = getattr(socket, "TCP_KEEPCNT", 6)
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
_TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
_TCP_CA_NAME_MAX = 16
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_TCP_MAXSEG = getattr(socket, "TCP_MAXSEG", 2)


def close_reason_to_exc(reason: CloseReason | str) -> Exception | None:
    """Map the engine's close reason to the exception asyncio programs catch."""
    if reason == CloseReason.NORMAL or reason == CloseReason.ABORTED:
        return None
    if reason == CloseReason.REFUSED:
        return ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
    if reason == CloseReason.RESET:
        return ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))
    if reason == CloseReason.TIMEOUT:
        return TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
    if reason == CloseReason.UNREACHABLE:
        return oserror(errno.EHOSTUNREACH)
    return ConnectionError(reason)


class TcpLayer:
    """Every TCP connection and listener of one stack, on asyncio.

    The rules (demultiplexing, LISTEN, SYN cookies, RST for closed ports, ICMP checks,
    port choice) are the sans-I/O :class:`~anp_async.proto.tcp.host.TcpHost`; this class
    parses segments for it, transmits what it answers, and keeps the endpoints it makes.
    """

    def __init__(self, stack: NetStack, config: TcpConfig) -> None:
        self.stack = stack
        self.host: TcpHost[TcpEndpoint] = TcpHost(
            stack.ip_b, config, stack.mtu, self._new_endpoint, secret=os.urandom(48)
        )
        self.host.local_ip6 = stack.ip6_b
        self.dirty: dict[TcpEndpoint, None] = {}
        #: Endpoints whose output pass waits for their applications' turn (``flush_dirty``).
        self.deferred: dict[TcpEndpoint, None] = {}
        self._deferred_handle: asyncio.Handle | None = None
        #: Established IPv4 connections by the raw bytes that name them in a frame
        #: (source IP, our IP, source port, our port): the receive fast path's table.
        self.fast_table: dict[bytes, TcpEndpoint] = {}
        #: Per-connection counters of connections already gone, so totals survive them.
        self._closed_conn_counters = Counters()
        #: Seconds an orphaned connection (its transport closed) may sit in FIN_WAIT_2
        #: waiting for the peer's FIN, like Linux's tcp_fin_timeout: without it a peer
        #: that never closes would hold the TCB forever.
        self.orphan_fin_timeout = 60.0
        stack.add_unreachable_listener(self._host_unreachable)

    # The host's state, under the names the rest of the package (and tests) use.

    @property
    def config(self) -> TcpConfig:
        return self.host.config

    @property
    def conns(self) -> dict[Key, TcpEndpoint]:
        return self.host.conns

    @property
    def listeners(self) -> dict[int, list[Listener]]:
        """Every listener by port (see :attr:`TcpHost.listeners`)."""
        return self.host.listeners

    @property
    def counters(self) -> Counters:
        return self.host.counters

    @property
    def isn(self) -> IsnGenerator:
        return self.host.isn

    @isn.setter
    def isn(self, value: IsnGenerator) -> None:
        self.host.isn = value

    @property
    def cookies(self) -> SynCookies:
        return self.host.cookies

    @cookies.setter
    def cookies(self, value: SynCookies) -> None:
        self.host.cookies = value

    @property
    def challenge_limiter(self) -> ChallengeAckLimiter:
        return self.host.challenge_limiter

    @challenge_limiter.setter
    def challenge_limiter(self, value: ChallengeAckLimiter) -> None:
        self.host.challenge_limiter = value

    def _new_endpoint(self, key: Key, conn: TcpConnection, listener: Listener) -> TcpEndpoint:
        ep = TcpEndpoint(self, key, conn)
        ep.listener = listener
        return ep

    # ----------------------------------------------------------------- input

    def input(self, hdr: IPv4Header | IPv6Header, data: memoryview) -> None:
        """One TCP segment from the IP layer."""
        host = self.host
        try:
            seg = parse_tcp(data, hdr.src, hdr.dst, not self.stack.rx_csum_trusted)
        except ParseError as e:
            host.counters[e.reason] += 1
            return
        # RFC 3168 (5): the IP header's ECN field travels with the segment.
        ecn = (hdr.tos if isinstance(hdr, IPv4Header) else hdr.traffic_class) & 3
        if ecn:
            seg.ecn = ecn
        stack = self.stack
        ep = host.input(hdr.src, hdr.dst, seg, stack.rx_now if stack.in_rx else stack.now())
        if host.retired:
            for old in host.take_retired():
                old._finish()
        if ep is not None:
            if ep.fast_key is None and ep.conn.state is TcpState.ESTABLISHED:
                self._predict(ep, hdr, data)
            self.touch(ep)
        if host.outbox:
            for dst, reply in host.take_outbox():
                self._transmit(dst, reply)

    def _predict(self, ep: TcpEndpoint, hdr: IPv4Header | IPv6Header, data: memoryview) -> None:
        """An established IPv4 connection joins the fast path's table (it leaves it in
        ``TcpEndpoint._finish``)."""
        if isinstance(hdr, IPv4Header) and hdr.dst == self.stack.ip_b and not ep.finished:
            key = hdr.src + hdr.dst + bytes(data[:4])
            ep.fast_key = key
            self.fast_table[key] = ep

    def rx_fast(self, frame: bytes, off: int, csum_trusted: bool) -> bool:
        """Header prediction on a raw frame (``proto/tcp/fastpath.py``): True when the frame
        was an established connection's next segment and has been taken, as the full way
        through ``input`` would; False (nothing changed): the stack parses it layer by
        layer. Called inside a receive batch."""
        stack = self.stack
        got = predict_frame(frame, off, stack.mac_b, not csum_trusted)
        if got is None:
            return False
        ep = self.fast_table.get(got[0])
        if ep is None:
            return False
        _, seq, ack, window, ts, payload = got
        if not ep.conn.rx_predicted(seq, ack, window, ts, payload, stack.rx_now):
            return False
        self.host.counters["rx_segments"] += 1
        self.dirty[ep] = None
        return True

    def _transmit(self, dst: bytes, seg: TcpSegment, mss: int = 0, dscp: int = 0) -> None:
        """Send ``seg``; ``mss`` (the connection's, 0 for none) lets a NIC with the virtio-net
        header cut a segment larger than it into MSS-sized ones (TSO); ``dscp``: the TOS
        byte's upper six bits (IP_TOS / IPV6_TCLASS)."""
        try:
            tso = self.stack.send_tcp(dst, seg, mss, dscp)
        except OSError:
            self.counters["tx_no_route"] += 1
            return
        c = self.host.counters  # (not the property: once per segment)
        if tso:
            c["tso_segments_sent"] += 1
        c["tx_segments"] += 1

    def icmp_error(
        self, type_: int, code: int, quoted: IPv4Header | IPv6Header, first8: memoryview
    ) -> None:
        """An ICMP error quoting one of our segments (the host checks it, RFC 5927)."""
        ep = self.host.icmp_error(type_, code, quoted.dst, first8)
        if ep is not None:
            ep.fail(CloseReason.REFUSED)

    def path_mtu_reduced(self, quoted: IPv6Header, first8: memoryview, mtu: int) -> None:
        """A Packet Too Big quoting one of our segments: its connection lowers its MSS to
        the path MTU ``mtu`` and resends (the host checks the quote, RFC 5927)."""
        ep = self.host.path_mtu_reduced(quoted.dst, first8, mtu, self.stack.now())
        if ep is not None:
            self.touch(ep)

    # ---------------------------------------------------------------- output

    def touch(self, ep: TcpEndpoint) -> None:
        """Flush ``ep`` now, or at the end of the receive batch when inside one."""
        if self.stack.in_rx:
            self.dirty[ep] = None
        else:
            ep.flush()

    def flush_dirty(self) -> None:
        """Flush every endpoint touched during the receive batch (at the batch's time).

        An endpoint that handed its application data (or EOF) which the application did
        not answer from inside the callback -- a stream reader's task runs on the next
        loop pass -- takes its output pass after that pass instead (:meth:`_flush_deferred`,
        scheduled behind the tasks the batch woke): the reply then carries the ACK the
        batch owes, as a delayed ACK rides on an RPC reply in Linux, instead of a pure ACK
        now and the reply in a second frame. The ACK waits one loop pass, never a timer;
        RFC 5681 (4.2)'s every-second-segment ACK and immediate duplicate ACKs stay well
        inside their bounds (500 ms; "immediately" against a round trip)."""
        now = self.stack.rx_now
        while self.dirty:
            ep = next(iter(self.dirty))
            del self.dirty[ep]
            ep.flush(now, after_app=True)
        if self.deferred and self._deferred_handle is None:
            loop = self.stack.loop
            assert loop is not None
            self._deferred_handle = loop.call_soon(self._flush_deferred)

    def _flush_deferred(self) -> None:
        """The output passes ``flush_dirty`` left for after the applications' turn (an
        endpoint that flushed since, its application having written, is gone from the
        set: its reply took the ACK)."""
        self._deferred_handle = None
        deferred = self.deferred
        while deferred:
            ep = next(iter(deferred))
            del deferred[ep]
            ep.flush()

    def _host_unreachable(self, next_hop: bytes) -> None:
        for ep in self.host.opening_via(next_hop, self.stack.next_hop):
            ep.fail(CloseReason.UNREACHABLE)

    # ------------------------------------------------------------- opening

    def pick_port(self, remote: bytes, rport: int) -> int:
        """A random ephemeral port whose 4-tuple is not in use (TIME_WAIT included)."""
        return self.host.pick_port(remote, rport)

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str | None = None,
        port: int | None = None,
        *,
        local_addr: tuple[str, int] | None = None,
        nodelay: bool | None = None,
        ssl: Any = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        tcp_config: TcpConfig | None = None,
        sock: Any = None,
        tos: int = 0,
        **_: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """asyncio's create_connection on the stack. ``tos`` (the stack's own keyword: a
        socket's IP_TOS / IPV6_TCLASS set before connect) marks every segment from the
        SYN on with its DSCP, as Linux does (the ECN bits stay the connection's)."""
        if sock is not None:
            raise ValueError("sock= is not supported on the stack (there is no kernel socket)")
        if host is None or port is None:
            raise ValueError("host and port must be given")
        stack = self.stack
        rip = addr_to_bytes(await resolve_ip(host))
        rport = int(port)
        if stack.next_hop(rip) is None:
            raise oserror(errno.ENETUNREACH)
        if local_addr is not None and local_addr[1]:
            lport = int(local_addr[1])
            if not self.host.port_free(rip, rport, lport):
                raise oserror(errno.EADDRINUSE)
        else:
            lport = self.pick_port(rip, rport)
        overrides = {"nodelay": bool(nodelay)} if nodelay is not None else {}
        cfg = tcp_config or self.host.conn_config(remote=rip, **overrides)
        conn = self.host.connect(rip, rport, lport, stack.now(), cfg)
        ep = TcpEndpoint(self, (rip, rport, lport), conn)
        ep.dscp = tos & 0xFC
        assert stack.loop is not None
        waiter: asyncio.Future[None] = stack.loop.create_future()
        ep.connect_waiter = waiter
        self.host.add(ep)
        ep.flush()
        try:
            await waiter
        except asyncio.CancelledError:
            ep.abort()
            raise
        protocol = protocol_factory()
        transport = TcpTransport(stack.loop, ep, protocol)
        if ssl:
            from .tls import wrap_client

            return await wrap_client(
                stack.loop,
                transport,
                protocol,
                ssl,
                server_hostname or host,
                ssl_handshake_timeout,
                ssl_shutdown_timeout,
            )
        transport._start()
        return transport, protocol

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str | None = None,
        port: int | None = 0,
        *,
        family: int = socket.AF_UNSPEC,
        backlog: int = 100,
        start_serving: bool = True,
        ssl: Any = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        sock: Any = None,
        **_: Any,
    ) -> Server:
        from .server import Server

        if sock is not None:
            raise ValueError("sock= is not supported on the stack (there is no kernel socket)")
        stack = self.stack
        if isinstance(host, (list, tuple)):
            host = host[0] if host else None
        addr = await resolve_ip(host)
        # One listener takes both families (as a kernel socket on :: does), or the one
        # ``family`` names (asyncio's create_server(family=...)); an IPv4 and an IPv6
        # listener may share a port.
        if addr not in ("0.0.0.0", "::", stack.ip, stack.ip6):
            raise oserror(errno.EADDRNOTAVAIL)
        if family not in (socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6):
            raise oserror(errno.EAFNOSUPPORT)
        port = int(port or 0)
        if port == 0:
            port = self.pick_port(b"", 0)
        elif self.host.listen_conflict(
            port, v4=family != socket.AF_INET6, v6=family != socket.AF_INET,
            reuseport=bool(reuse_port),
        ):  # fmt: skip
            raise oserror(errno.EADDRINUSE)
        server = Server(
            self,
            port,
            protocol_factory,
            backlog,
            v4=family != socket.AF_INET6,
            v6=family != socket.AF_INET,
            reuseport=bool(reuse_port),
            ssl=ssl,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if start_serving:
            server._start_serving()
        return server

    def listen(
        self, port: int, backlog: int, accept: Callable[[TcpEndpoint], None], *,
        v4: bool = True, v6: bool = True, reuseport: bool = False,
    ) -> Listener:  # fmt: skip
        """Listen on ``port`` (for the families ``v4``/``v6``; ``reuseport``: share it
        with other listeners that set it); ``accept(endpoint)`` for each connection that
        opens."""
        return self.host.listen(port, backlog, accept, v4=v4, v6=v6, reuseport=reuseport)

    def unlisten(self, listener: Listener) -> None:
        """Stop listening (connections already opened stay)."""
        self.host.unlisten(listener)

    # ------------------------------------------------------------- shutdown

    def close_all(self) -> None:
        """Stop every listener and abort every connection (the stack is closing)."""
        for same_port in self.listeners.values():
            for listener in same_port:
                self.unlisten(listener)
        for ep in list(self.conns.values()):
            ep.abort()
        self.deferred.clear()
        if self._deferred_handle is not None:
            self._deferred_handle.cancel()
            self._deferred_handle = None

    def busy(self) -> bool:
        """True while a connection still has data or a FIN to deliver to its peer."""
        return self.host.busy()

    def stats(self) -> dict[str, Any]:
        """Counters (the host's, every connection's summed), listeners and a connection list."""
        conns = []
        ip, ip6 = self.stack.ip, self.stack.ip6
        for ep in list(self.conns.values())[:1000]:
            info = dict(ep.conn.info())
            v6 = len(ep.key[0]) == 16
            info["local"] = f"[{ip6}]:{ep.key[2]}" if v6 else f"{ip}:{ep.key[2]}"
            info["remote"] = endpoint_name(ep.key[0], ep.key[1])
            conns.append({k: (v.name if hasattr(v, "name") else v) for k, v in info.items()})
        totals = Counters(self.counters)
        for ep in self.conns.values():
            totals.add(ep.conn.counters, "conn_")
        totals.add(self._closed_conn_counters)
        totals.add(self.challenge_limiter.counters())
        return dict(totals) | {
            "open_connections": len(self.conns),
            "listeners": sorted(self.listeners),
            # For anp ss: one entry per listening socket (an IPv4 and an IPv6-only one on
            # a port are two, as in Linux), its SYN-RECEIVED count and backlog.
            "listen_sockets": [
                {"port": lst.port, "local": bound_name(ip, ip6, lst.port, lst.v4, lst.v6),
                 "half_open": lst.half_open, "backlog": lst.backlog}
                for _, same in sorted(self.listeners.items())
                for lst in same
            ],  # fmt: skip
            # For the metrics, per port (a port with two listeners shows their sums).
            "listen_queues": {
                str(port): {
                    "half_open": sum(lst.half_open for lst in same),
                    "backlog": sum(lst.backlog for lst in same),
                }
                for port, same in sorted(self.listeners.items())
            },
            "connections": conns,
        }


class TcpEndpoint:
    """Glue around one TcpConnection: output, timer, and events to the transport."""

    __slots__ = (
        "layer",
        "key",
        "conn",
        "transport",
        "listener",
        "connect_waiter",
        "_timer",
        "_timer_when",
        "_flushing",
        "_again",
        "_fed_app",
        "eof_received",
        "closed_reason",
        "_rip_str",
        "orphaned",
        "_orphan_timer",
        "finished",
        "fast_key",
        "tpl",
        "dscp",
    )

    def __init__(self, layer: TcpLayer, key: Key, conn: TcpConnection) -> None:
        self.layer = layer
        self.key = key
        self.conn = conn
        self.transport: TcpTransport | None = None
        self.listener: Listener | None = None
        self.connect_waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._flushing = False
        self._again = False
        #: A DataReceived or EOF was handed to the transport in this flush.
        self._fed_app = False
        self.eof_received = False
        self.closed_reason: CloseReason | str | None = None
        #: The transport is gone: the kernel would call this an orphaned socket.
        self.orphaned = False
        self._orphan_timer: asyncio.TimerHandle | None = None
        #: Out of the table, timers cancelled, counters added to the layer's totals.
        self.finished = False
        #: Its key in ``TcpLayer.fast_table`` once established (IPv4).
        self.fast_key: bytes | None = None
        #: Its header template (``proto/tcp/fastpath.py``), made at the first send in
        #: ESTABLISHED; None before, for IPv6, and while the fast path is off.
        self.tpl: HeaderTemplate | None = None
        #: The TOS byte's upper six bits the socket asked for (IP_TOS, IPV6_TCLASS; the
        #: ECN bits stay the connection's, as on Linux).
        self.dscp = 0

    # -------------------------------------------------------------- flushing

    def flush(self, now: float | None = None, after_app: bool = False) -> None:
        """Transmit what the engine has due, dispatch its events, re-arm the timer.

        ``now``: the receive batch's clock, taken for the first output pass as for the
        batch's input (the events' callbacks run just before it: an application that
        spends long in them makes that pass's times early by as much); later passes, after
        more callbacks, read the clock. ``after_app`` (the end of a receive batch): when
        the events fed the application and it did not answer from its callbacks, leave
        the output pass to ``TcpLayer._flush_deferred``, after the application's turn."""
        if self._flushing:
            self._again = True  # a callback asked for a flush: loop once more below
            return
        layer = self.layer
        if layer.deferred:
            layer.deferred.pop(self, None)  # this pass does what the deferred one would
        self._flushing = True
        stack = layer.stack
        conn = self.conn
        try:
            # Events first, then one output pass: what the application writes from its
            # callbacks leaves in the same pass, carrying the ACK the receive batch owes.
            events = conn.take_events()
            for _ in range(16):
                touched = False
                if events:
                    self._fed_app = False
                    for ev in events:
                        self._dispatch(ev)
                    touched = self._again
                    if after_app and self._fed_app and not touched:
                        layer.deferred[self] = None
                        return  # (the deferred pass re-arms the timer)
                self._again = False
                t = stack.now() if now is None else now
                segs = conn.output(t)
                if segs:
                    mss = conn.seg_mss if conn.cfg.tso_max else 0
                    self._send(segs, mss, t)
                if not touched:
                    break  # output makes no events: only a callback that used us could
                now = None
                events = conn.take_events()
                if not events and not self._again:
                    break
        finally:
            self._flushing = False
        self._arm_timer()
        if conn.state is TcpState.CLOSED:
            self._finish()
        elif self.orphaned:
            self._watch_orphan()

    def _send(self, segs: list[TcpSegment], mss: int, now: float) -> None:
        """Transmit what ``output`` gave: through the connection's header template where
        it fits (the fast path), else through the stack's ``send_tcp``."""
        layer = self.layer
        stack = layer.stack
        tpl = self.tpl
        if tpl is None and stack.fast_path and self.conn.state is TcpState.ESTABLISHED:
            tpl = self.tpl = stack.tcp_template(self.key[0], self.key[2], self.key[1])
        dscp = self.dscp
        if tpl is not None and (dscp or not stack.fast_path):
            tpl = None  # (the templates carry TOS 0: marked segments take the full build)
        rip = self.key[0]
        for seg in segs:
            sent = stack.send_templated(tpl, seg, mss, now) if tpl is not None else 0
            if sent:
                c = layer.host.counters
                c["tx_segments"] += 1
                if sent == TX_TSO:
                    c["tso_segments_sent"] += 1
            else:
                layer._transmit(rip, seg, mss, dscp)

    def orphan(self) -> None:
        """The transport let go of this connection (connection_lost was called)."""
        self.transport = None
        self.orphaned = True
        self._watch_orphan()

    def _watch_orphan(self) -> None:
        if self._orphan_timer is None and self.conn.state is TcpState.FIN_WAIT_2:
            loop = self.layer.stack.loop
            assert loop is not None
            self._orphan_timer = loop.call_later(
                self.layer.orphan_fin_timeout, self._orphan_expired
            )

    def _orphan_expired(self) -> None:
        self._orphan_timer = None
        if self.conn.state is TcpState.FIN_WAIT_2 and self.layer.conns.get(self.key) is self:
            # Like Linux's tcp_fin_timeout: drop the TCB quietly; a late FIN from the
            # peer then meets a closed port and gets a RST.
            self.layer.counters["orphan_fin_wait2_timeouts"] += 1
            self._finish()

    def _arm_timer(self) -> None:
        when = self.conn.next_deadline()
        handle = self._timer
        if when is None:
            if handle is not None:
                handle.cancel()
                self._timer = None
            return
        if handle is not None:
            if self._timer_when <= when:
                return  # fires early; _on_timer re-arms for the real deadline
            handle.cancel()
        self._timer_when = when
        loop = self.layer.stack.loop
        assert loop is not None
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        gate = self.layer.stack.timer_gate
        if gate is None or not gate.hold(self._timer_due):
            self._timer_due()

    def _timer_due(self) -> None:
        """The timer's work, now or once the gate let it through."""
        if self.finished or self._timer is not None:
            return  # closed meanwhile, or input that waited re-armed the timer
        # The loop may run a timer up to its clock resolution early: never report a
        # time before the deadline we asked for.
        now = max(self.layer.stack.now(), self._timer_when)
        self.conn.on_timer(now)
        self.flush()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
            self._orphan_timer = None
        if self.finished:
            return
        self.finished = True
        layer = self.layer
        layer.host.remove(self)
        layer.dirty.pop(self, None)
        layer.deferred.pop(self, None)
        if self.fast_key is not None and layer.fast_table.get(self.fast_key) is self:
            del layer.fast_table[self.fast_key]
        layer._closed_conn_counters.add(self.conn.counters, "conn_")

    # -------------------------------------------------------------- events

    def _dispatch(self, ev: TcpEvent) -> None:
        tr = self.transport
        if isinstance(ev, DataReceived):
            if tr is not None:
                self._fed_app = True
                tr._on_data()
            elif self.orphaned:
                # Nobody will read: the application closed. Data that arrives between the
                # handshake and the transport's creation (create_connection has not resumed
                # yet) stays in the receive buffer for the transport's _start().
                self._discard_input()
        elif isinstance(ev, SendSpace):
            if tr is not None:
                tr._on_send_space()
        elif isinstance(ev, EofReceived):
            self.eof_received = True
            if tr is not None:
                self._fed_app = True
                tr._on_data()
        elif isinstance(ev, Connected):
            self._on_connected()
        elif isinstance(ev, Closed):
            self._on_closed(ev.reason)

    def _discard_input(self) -> None:
        n = len(self.conn.recv())
        if n:
            self.layer.counters["data_after_close_discarded"] += n

    def _on_connected(self) -> None:
        waiter = self.connect_waiter
        if waiter is not None:
            self.connect_waiter = None
            if not waiter.done():
                waiter.set_result(None)
            return
        listener = self.listener
        if listener is not None:
            listener.half_open -= 1
            self.listener = None
            if listener.closed:
                self.abort()
                return
            listener.accept(self)

    def _on_closed(self, reason: CloseReason | str) -> None:
        self.closed_reason = reason
        if self.listener is not None:  # died in SYN_RECEIVED
            self.listener.half_open -= 1
            self.listener = None
        waiter = self.connect_waiter
        if waiter is not None:
            self.connect_waiter = None
            if not waiter.done():
                exc = close_reason_to_exc(reason) or ConnectionAbortedError("connection aborted")
                waiter.set_exception(exc)
        if self.transport is not None:
            self.transport._on_closed(reason)

    # ------------------------------------------------------------- app calls

    def fail(self, reason: CloseReason) -> None:
        """End the connection locally with ``reason`` (ARP or ICMP said unreachable)."""
        if self.conn.state is not TcpState.CLOSED:
            self.conn.abort(self.layer.stack.now())
        self.conn.take_events()
        self._on_closed(reason)
        self._finish()

    def abort(self) -> None:
        if self.conn.state is not TcpState.CLOSED:
            self.conn.abort(self.layer.stack.now())
        self.flush()
        self._finish()


#: How received data reaches a protocol (``TcpTransport._on_data``): joined into one
#: ``bytes`` (any protocol), or as the receive buffer's chunks -- views of the frames --
#: to asyncio's own StreamReaderProtocol, which only appends them to its buffer, or copied
#: straight into a BufferedProtocol's buffers. The last two skip the join's copy.
_JOINED, _VIEWS, _VIEWS_BUFFERED = 0, 1, 2


def _delivery(protocol: asyncio.BaseProtocol) -> int:
    if isinstance(protocol, asyncio.BufferedProtocol):
        return _VIEWS_BUFFERED
    # Exactly the stdlib class: a subclass may keep what data_received gets.
    if type(protocol) is asyncio.StreamReaderProtocol:
        return _VIEWS
    return _JOINED


class TcpTransport(asyncio.Transport):
    """A stack TCP connection with asyncio's Transport contract."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ep: TcpEndpoint,
        protocol: asyncio.BaseProtocol,
        server: Server | None = None,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._ep: TcpEndpoint | None = ep
        self._conn = ep.conn
        self._protocol: Any = protocol
        self._views = _delivery(protocol)
        self._server = server
        self._buffer: collections.deque[memoryview] = collections.deque()
        self._buffer_size = 0
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        self._protocol_paused = False
        self._paused = False
        self._closing = False
        self._eof_pending = False  # write_eof() called while data is buffered
        self._eof_written = False
        self._eof_delivered = False
        self._conn_lost = 0
        self._lost_called = False
        self._started = False
        stack = ep.layer.stack
        self._extra: dict[str, Any] = {
            "peername": sockaddr(ep.key[0], ep.key[1]),
            "sockname": sockaddr(stack.ip6_b or b"", ep.key[2])
            if len(ep.key[0]) == 16
            else (stack.ip, ep.key[2]),
        }
        self._socket = SocketHolder("tcp")
        self._sockopts: dict[tuple[int, int], int] = {}
        # SendSpace matters only while our buffer holds data (see _on_send_space).
        self._conn.space_wanted = False
        ep.transport = self
        if server is not None:
            server._attach(self)

    def __repr__(self) -> str:
        state = self._conn.state.name
        return f"<TcpTransport {self._extra['sockname']} -> {self._extra['peername']} {state}>"

    def _start(self) -> None:
        """Tell the protocol it is connected, then hand it any data that came early."""
        self._started = True
        try:
            self._protocol.connection_made(self)
        except BaseException:
            self.abort()
            raise
        if self._conn.recv_available or (self._ep and self._ep.eof_received):
            self._loop.call_soon(self._on_data)
        ep = self._ep
        if ep is not None and ep.closed_reason is not None:
            self._on_closed(ep.closed_reason)

    # ----------------------------------------------------------- base API

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "stack_tcp_info":
            return dict(self._conn.info())
        if name == "socket":
            return self._socket.get(self)
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._views = _delivery(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def close(self) -> None:
        """Flush what is buffered, then send FIN; connection_lost(None) follows."""
        if self._closing:
            return
        self._closing = True
        ep = self._ep
        if ep is not None:
            ep._discard_input()  # no reader any more: like the kernel after close()
        if not self._buffer:
            self._conn_lost += 1
            self._shutdown_write()
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        """Send RST and drop everything buffered; connection_lost(None) follows."""
        self._force_close(None)

    # ---------------------------------------------------------- read side

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        if self._closing or self._paused:
            return
        self._paused = True

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._loop.call_soon(self._on_data)

    def _on_data(self) -> None:
        """Hand the protocol what the engine has buffered (called on DataReceived/EOF)."""
        if self._paused or self._lost_called or not self._started:
            return
        ep = self._ep
        if ep is None:
            return
        if self._closing:
            ep._discard_input()
            return
        views = self._views
        if self._conn.recv_available:
            try:
                if views == _JOINED:
                    self._protocol.data_received(self._conn.recv())
                elif views == _VIEWS:
                    # asyncio's StreamReaderProtocol appends what it gets to a bytearray:
                    # hand it the frames' payloads as they are (no join copy). What one
                    # recv took is delivered whole, as one joined data_received would be,
                    # even when the reader pauses us part of the way through.
                    received = self._protocol.data_received
                    for view in self._conn.recv_views():
                        received(view)
                else:
                    for view in self._conn.recv_views():
                        self._feed_buffered(view)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                return
            if not ep._flushing:
                # Reading opened the window: a window update may be due. (Inside a flush,
                # its output pass follows these callbacks anyway.)
                ep.layer.touch(ep)
        if ep.eof_received and not self._eof_delivered and not self._paused:
            if self._conn.recv_available:
                self._loop.call_soon(self._on_data)
                return
            self._eof_delivered = True
            try:
                keep_open = self._protocol.eof_received()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
                return
            if not keep_open:
                self.close()

    def _feed_buffered(self, data: bytes | memoryview) -> None:
        """Hand ``data`` to a BufferedProtocol (asyncio's SSL layer is one) in its buffers."""
        view = data if type(data) is memoryview else memoryview(data)
        while view:
            buf = memoryview(self._protocol.get_buffer(len(view))).cast("B")
            n = min(len(buf), len(view))
            if not n:
                raise RuntimeError("get_buffer() returned an empty buffer")
            buf[:n] = view[:n]
            self._protocol.buffer_updated(n)
            view = view[n:]

    # --------------------------------------------------------- write side

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._maybe_pause_protocol()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def can_write_eof(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        tp = type(data)
        if tp is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._eof_written or self._eof_pending:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        ep = self._ep
        if self._conn_lost or ep is None:
            self._conn_lost += 1
            if self._conn_lost >= 5:
                log.warning("socket.send() raised exception.")
            return
        view = memoryview(data) if tp is bytes else memoryview(data).cast("B")
        if not self._buffer:
            # (Queuing takes no time into account: the clock is read when output runs.)
            n = self._conn.send(view, 0.0)
            if n:
                ep.layer.touch(ep)
            if n == len(view):
                return
            view = view[n:]
        # What is left must survive the caller reusing its buffer, so keep our own copy
        # (like asyncio's transports do), unless it is a view of immutable bytes.
        if type(view.obj) is not bytes:
            view = memoryview(bytes(view))
        self._buffer.append(view)
        self._conn.space_wanted = True
        self._buffer_size += len(view)
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._closing or self._eof_written or self._eof_pending:
            return
        if self._buffer:
            self._eof_pending = True
        else:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        ep = self._ep
        if ep is None or self._eof_written:
            return
        self._eof_written = True
        if self._conn.state is not TcpState.CLOSED:
            self._conn.shutdown(self._loop.time())
            ep.layer.touch(ep)

    def _on_send_space(self) -> None:
        """ACKs freed engine buffer space: move our buffered data into it."""
        buf = self._buffer
        if not buf:
            return  # nothing waits here (a paused protocol always has data waiting)
        moved = False
        while buf:
            chunk = buf[0]
            n = self._conn.send(chunk, 0.0)
            if not n:
                break
            moved = True
            self._buffer_size -= n
            if n == len(chunk):
                buf.popleft()
            else:
                buf[0] = chunk[n:]
                break
        if moved and self._ep is not None:
            self._ep.layer.touch(self._ep)
        self._maybe_resume_protocol()
        if not buf:
            self._conn.space_wanted = False
            if self._eof_pending:
                self._eof_pending = False
                self._shutdown_write()
            if self._closing and not self._lost_called and not self._conn_lost:
                self._conn_lost += 1
                self._shutdown_write()
                self._loop.call_soon(self._call_connection_lost, None)

    def _maybe_pause_protocol(self) -> None:
        if self._buffer_size <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": "protocol.pause_writing() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffer_size <= self._low_water:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler(
                    {
                        "message": "protocol.resume_writing() failed",
                        "exception": exc,
                        "transport": self,
                        "protocol": self._protocol,
                    }
                )

    # ------------------------------------------------------------ closing

    def _on_closed(self, reason: CloseReason | str) -> None:
        """The engine says the connection is gone."""
        if not self._started:
            return  # _start() looks at ep.closed_reason
        exc = close_reason_to_exc(reason)
        if exc is None:
            # Orderly end of both directions: like a kernel socket, the transport stays
            # until the application closes it (its data and EOF are still deliverable).
            if self._closing and not self._lost_called and not self._conn_lost:
                self._conn_lost += 1
                self._loop.call_soon(self._call_connection_lost, None)
            return
        self._force_close(exc)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        """The single exit: abort the engine if needed, then connection_lost once."""
        if self._conn_lost:
            return
        self._buffer.clear()
        self._buffer_size = 0
        self._closing = True
        self._conn_lost += 1
        ep = self._ep
        if ep is not None and self._conn.state is not TcpState.CLOSED:
            ep.abort()
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        if self._lost_called:
            return
        self._lost_called = True
        ep = self._ep
        try:
            if self._started:
                self._protocol.connection_lost(exc)
        finally:
            if ep is not None:
                ep.orphan()
            self._ep = None
            self._protocol = None
            server = self._server
            if server is not None:
                server._detach(self)
                self._server = None

    # ----------------------------------------------------- socket options

    def _get_sockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        """getsockopt() answers that come from the engine (None: use the recorded value)."""
        if level == socket.IPPROTO_TCP and optname == _TCP_CONGESTION:
            cc = self._conn.cfg.congestion
            name = b"reno" if cc == "newreno" else cc.encode()  # Linux's names
            # With a buffer, Linux's TCP_CA_NAME_MAX (16) bytes, NUL-padded: C callers
            # read a string. (Without one, the bare name.)
            return name if buflen is None else name.ljust(_TCP_CA_NAME_MAX, b"\0")
        if level == socket.IPPROTO_TCP and optname == _TCP_INFO:
            ep = self._ep
            stack = ep.layer.stack if ep is not None else None
            now = stack.now() if stack is not None else self._loop.time()
            return pack_tcp_info(self._conn.info(), now, stack.mtu if stack else 1500)
        if level == socket.IPPROTO_TCP and optname == _TCP_MAXSEG:
            return self._conn.snd_mss  # (Linux: the MSS in use, less the options)
        return None

    def _apply_sockopt(self, level: int, optname: int, value: int) -> None:
        """setsockopt() on the socket-like object, mapped onto the engine's options."""
        # Each connection owns its TcpConfig copy (TcpHost.conn_config), so options set
        # here change this connection only.
        cfg = self._conn.cfg
        if level == socket.IPPROTO_TCP and optname == socket.TCP_NODELAY:
            cfg.nodelay = bool(value)
        elif level == socket.SOL_SOCKET and optname == socket.SO_KEEPALIVE:
            cfg.keepalive = bool(value)
        elif level == socket.IPPROTO_TCP and optname == _TCP_KEEPIDLE:
            cfg.keepalive_idle = float(value)
        elif level == socket.IPPROTO_TCP and optname == _TCP_KEEPINTVL:
            cfg.keepalive_interval = float(value)
        elif level == socket.IPPROTO_TCP and optname == _TCP_KEEPCNT:
            cfg.keepalive_count = int(value)
        elif level == socket.IPPROTO_TCP and optname == _TCP_USER_TIMEOUT:
            # RFC 5482 / Linux: milliseconds, 0 = system default.
            cfg.user_timeout = value / 1000.0 if value else None
        elif (level, optname) in (
            (socket.IPPROTO_IP, socket.IP_TOS), (socket.IPPROTO_IPV6, socket.IPV6_TCLASS)
        ):
            ep = self._ep
            if ep is not None and -1 <= value <= 255:
                ep.dscp = max(0, value) & 0xFC  # (Linux keeps TCP's ECN bits its own)
        elif level == socket.IPPROTO_TCP and optname == _TCP_CONGESTION:
            # The socket-like object hands bytes values over as a little-endian int.
            raw = value.to_bytes((value.bit_length() + 7) // 8, "little") if value > 0 else b""
            name = raw.split(b"\0", 1)[0].decode("ascii", "replace")
            try:
                self._conn.set_congestion(name)
            except ValueError:
                raise oserror(errno.ENOENT) from None  # as Linux for an unknown algorithm
        if self._ep is not None:
            self._ep.layer.touch(self._ep)
