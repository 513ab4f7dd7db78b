"""The stack's side of a preloaded program's sockets: one record per socket, and the pumps.

A program's socket is one end of a Unix socketpair; the record here owns the other end (the
*anp end*) and joins it to the stack:

- :class:`StreamSocket` (TCP): before ``connect``/``listen`` nothing flows. A connected
  socket pumps bytes both ways between the anp end and its :class:`~asyncio.Transport`,
  with back-pressure both ways: a program that does not read makes the pump stop reading the
  stack (``pause_reading``, the advertised window closes); a stack that cannot send makes the
  pump stop reading the program (``pause_writing``). A listening socket writes one byte to
  its anp end per connection waiting in its accept queue.
- :class:`DatagramSocket` (UDP): every datagram crosses the pair with an 8-byte address
  header (:data:`~.protocol.UDP_HDR`).

Lifetime follows the program's descriptor, so dup(), fork() and exit need no messages: when
the program's last copy closes, the anp end hangs up. How the stream ended decides what the
stack does, like the kernel: the program shut down writing -> FIN (half-close); it closed
-> FIN, and RST if the peer sends more data (RFC 9293 3.10.4: data for a closed socket);
``SO_LINGER`` zero -> RST at once.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import select
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..transport.sockopts import IP_MTU, RULED, check_option, option_default
from ..transport.tcpinfo import unconnected_tcp_info
from .protocol import (
    ADDR_SLOT,
    DATA_MAX,
    UDP_HDR,
    LibState,
    Message,
    pack_udp_header,
    unpack_sockaddr,
    unpack_udp_header,
)

if TYPE_CHECKING:
    from .server import SocketApi

log = logging.getLogger("anp_async.preload")

#: Bytes read from a program per wake-up (a TSO-sized chunk or more keeps bulk cheap).
READ_CHUNK = 256 * 1024
#: Connections one listening socket may hold unaccepted, whatever its backlog.
ACCEPT_QUEUE_MAX = 4096
#: Datagrams a UDP socket may hold before it has a port (the first send binds it).
UDP_PENDING_MAX = 64

#: How a connection ended -> the errno a program's read reports once (then 0).
_END_ERRNO: dict[type[BaseException], int] = {
    ConnectionRefusedError: errno.ECONNREFUSED,
    ConnectionResetError: errno.ECONNRESET,
    ConnectionAbortedError: errno.ECONNABORTED,
    TimeoutError: errno.ETIMEDOUT,
    BrokenPipeError: errno.EPIPE,
}


def errno_of(exc: BaseException | None) -> int:
    """The errno that the kernel would report for ``exc`` (0 for a clean end)."""
    if exc is None:
        return 0
    for cls, code in _END_ERRNO.items():
        if isinstance(exc, cls):
            return code
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO


def _app_hung_up(sock: socket.socket) -> bool:
    """After EOF on the anp end: did the program close (True) or only shut down writing?

    A program's close() shuts the pair down both ways, which polls as POLLHUP here;
    shutdown(SHUT_WR) gives EOF without it.
    """
    p = select.poll()
    p.register(sock.fileno(), select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in p.poll(0))


class HangupWatcher:
    """Tells when the program closes sockets that the pump is not reading.

    A socket that is new or connecting must not be read (its filler must stay until the
    handshake ends), yet a program that closes it must free it: an epoll set asked only
    for EPOLLRDHUP reports the hang-up and nothing else.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ep = select.epoll()
        self._cbs: dict[int, Callable[[], None]] = {}
        loop.add_reader(self._ep.fileno(), self._ready)

    def watch(self, fd: int, on_hangup: Callable[[], None]) -> None:
        self._ep.register(fd, select.EPOLLRDHUP)
        self._cbs[fd] = on_hangup

    def unwatch(self, fd: int) -> None:
        if self._cbs.pop(fd, None) is not None:
            try:
                self._ep.unregister(fd)
            except (OSError, ValueError):
                pass

    def _ready(self) -> None:
        for fd, _ in self._ep.poll(0):
            cb = self._cbs.get(fd)
            if cb is not None:
                self.unwatch(fd)
                cb()

    def close(self) -> None:
        self._loop.remove_reader(self._ep.fileno())
        self._ep.close()
        self._cbs.clear()


class SocketRecord:
    """What every preloaded socket has: an id, the anp end, options, and a way to die."""

    kind = ""
    lib_type = 0

    def __init__(self, api: SocketApi, sid: int, sock: socket.socket, family: int) -> None:
        self.api = api
        self.sid = sid
        self.sock = sock
        self.fd = sock.fileno()
        self.family = family
        self.inode = 0
        self.options: dict[tuple[int, int], bytes] = {}
        self.pending_error = 0
        self.closed = False
        sock.setblocking(False)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.api.loop

    def lib_state(self) -> LibState:
        return LibState.NEW

    def sockname(self) -> tuple[str, int]:
        return ("0.0.0.0", 0)

    def peername(self) -> tuple[str, int] | None:
        return None

    def option(self, level: int, name: int) -> bytes | None:
        """The option's value as the program reads it: what it set, else Linux's default
        (``transport/sockopts.py``); None for an option with no value to give."""
        key = (level, name)
        value = self.options.get(key)
        if value is not None:
            return value
        if key == (socket.SOL_SOCKET, socket.SO_LINGER):
            return bytes(8)  # struct linger, off
        if key in RULED:
            return option_default(level, name).to_bytes(4, "little", signed=True)
        return None

    def set_option(self, level: int, name: int, value: bytes) -> None:
        """Keep an option as Linux does (flags as 0/1, values in range; OSError EINVAL or
        ENOPROTOOPT for what it refuses)."""
        if (level, name) in RULED:
            if len(value) < 4:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            stream = self.lib_type == socket.SOCK_STREAM
            value = check_option(stream, level, name, _int_of(value)).to_bytes(
                4, "little", signed=True
            )
        self.options[(level, name)] = value

    def apply_options(self, transport: asyncio.BaseTransport) -> None:
        """The options the program set before its stack transport existed (connect,
        accept, bind or the first send), on it now."""
        for (level, name), value in self.options.items():
            apply_option(transport, level, name, value)

    def take_error(self) -> int:
        err, self.pending_error = self.pending_error, 0
        return err

    def _flag(self, name: int) -> bool:
        """Is the SOL_SOCKET option ``name`` set?"""
        return _int_of(self.options.get((socket.SOL_SOCKET, name), b"")) != 0

    @property
    def reuseaddr(self) -> bool:
        """SO_REUSEADDR is set."""
        return self._flag(socket.SO_REUSEADDR)

    @property
    def reuseport(self) -> bool:
        """SO_REUSEPORT is set."""
        return self._flag(socket.SO_REUSEPORT)

    @property
    def v6only(self) -> bool:
        raw = self.options.get((socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        return raw is not None and _int_of(raw) != 0

    @property
    def wildcard(self) -> str:
        """The any-address in the program's family (what an unbound socket is named)."""
        return "::" if self.family == socket.AF_INET6 else "0.0.0.0"

    def hears(self, host: str, bound_ip: str) -> bool:
        """Would a Linux socket of this family, bound to ``bound_ip``, get traffic from
        ``host``? (Linux has an AF_INET socket hear IPv4, AF_INET6 both unless
        IPV6_V6ONLY. A listener and a UDP binding pass the answer to the stack as the
        families they take; a UDP socket bound to one address filters with it here.)"""
        v6 = _is_v6(host)
        if self.family == socket.AF_INET:
            return not v6
        if self.v6only:
            return v6
        if bound_ip not in ("0.0.0.0", "::"):
            return v6 == _is_v6(bound_ip)
        return True

    def release(self) -> None:
        """Free the record and its anp end (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.api.watcher.unwatch(self.fd)
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.api.forget(self)
        self.sock.close()


def _is_v6(host: str) -> bool:
    return ":" in host


def _name(addr: tuple[Any, ...]) -> tuple[str, int]:
    """(host, port) of a transport's 2- or 4-tuple address."""
    return (addr[0], addr[1])


def _int_of(value: bytes) -> int:
    return int.from_bytes(value[:4].ljust(4, b"\0"), "little", signed=True)


class StreamSocket(SocketRecord):
    """A TCP socket of the program: new, connecting, connected, listening, or done."""

    kind = "tcp"
    lib_type = socket.SOCK_STREAM

    def __init__(self, api: SocketApi, sid: int, sock: socket.socket, family: int) -> None:
        super().__init__(api, sid, sock, family)
        self.bound: tuple[str, int] | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.pump: StreamPump | None = None
        self.listener: Listener | None = None
        self.end_errno = 0  # why the stream ended, for the program's read (once)
        self.names: tuple[tuple[str, int], tuple[str, int] | None] | None = None

    def lib_state(self) -> LibState:
        if self.listener is not None:
            return LibState.LISTENING
        if self.connecting is not None:
            return LibState.CONNECTING
        if self.pump is not None:
            return LibState.CONNECTED
        return LibState.NEW

    def connected(self, pump: StreamPump) -> None:
        """The handshake is done (connect or accept): pump, and remember the names."""
        self.pump = pump
        transport = pump.transport
        assert transport is not None
        self.names = (
            _name(transport.get_extra_info("sockname")),
            _name(transport.get_extra_info("peername")),
        )
        self.apply_options(transport)

    def sockname(self) -> tuple[str, int]:
        if self.names is not None:
            return self.names[0]
        return self.bound or (self.wildcard, 0)

    def peername(self) -> tuple[str, int] | None:
        return self.names[1] if self.names is not None else None

    @property
    def linger_zero(self) -> bool:
        raw = self.options.get((socket.SOL_SOCKET, socket.SO_LINGER))
        if raw is None or len(raw) < 8:
            return False
        onoff, secs = struct.unpack("=ii", raw[:8])
        return bool(onoff) and secs == 0

    def int_option(self, level: int, name: int) -> int | None:
        raw = self.options.get((level, name))
        return None if raw is None else _int_of(raw)

    def traffic_class(self, v6: bool) -> int:
        """The TOS byte (IPv4) or traffic class (IPv6) set so far: what the connection's
        segments carry from the SYN on."""
        key = (socket.IPPROTO_IPV6, socket.IPV6_TCLASS) if v6 else (socket.IPPROTO_IP, socket.IP_TOS)
        return self.int_option(*key) or 0

    def nodelay(self) -> bool | None:
        v = self.int_option(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        return None if v is None else bool(v)

    def set_option(self, level: int, name: int, value: bytes) -> None:
        super().set_option(level, name, value)
        transport = self.pump.transport if self.pump is not None else None
        if transport is not None:
            apply_option(transport, level, name, value)

    def option(self, level: int, name: int) -> bytes | None:
        transport = self.pump.transport if self.pump is not None else None
        if transport is not None and level == socket.IPPROTO_TCP:
            sockobj = transport.get_extra_info("socket")
            if sockobj is not None:
                v = sockobj.getsockopt(level, name, DATA_MAX)
                if isinstance(v, bytes):
                    return v
                return int(v).to_bytes(4, "little", signed=True)
        if level == socket.IPPROTO_TCP and name == socket.TCP_INFO:
            # No connection (yet, or any more): its state and zeros, as Linux answers.
            state = "LISTEN" if self.listener else "SYN-SENT" if self.connecting else "CLOSED"
            return unconnected_tcp_info(state)
        if (level, name) == (socket.IPPROTO_IP, IP_MTU):
            # The path MTU of a connected socket (the link's: the stack does no IPv4
            # path MTU discovery); Linux: ENOTCONN without a peer.
            if transport is None:
                raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
            return self.api.stack.mtu.to_bytes(4, "little")
        if level == socket.IPPROTO_TCP and name == socket.TCP_MAXSEG:
            # Linux before a connection: the MSS set with TCP_MAXSEG, else 536.
            recorded = super().option(level, name)
            return recorded if recorded and _int_of(recorded) > 0 else (536).to_bytes(4, "little")
        return super().option(level, name)

    def watch_hangup(self) -> None:
        """Free the socket when the program closes it (new or connecting: no reading)."""
        self.api.watcher.watch(self.fd, self.on_program_closed)

    def on_program_closed(self) -> None:
        if self.connecting is not None:
            self.connecting.cancel()  # the stack aborts the half-open connection
            self.connecting = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.release()

    def release(self) -> None:
        if self.bound is not None:
            self.api.unbind_tcp(self.bound[1], self)
        super().release()

    def hand_over(self) -> None:
        """A sibling worker took this socket (a dup of its anp end): let go of it here
        without ending it (the program's descriptor now talks to the sibling)."""
        if self.bound is not None:
            self.api.unbind_tcp(self.bound[1], self)  # the sibling holds the port now
        self.closed = True
        self.api.watcher.unwatch(self.fd)
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock.close()


def apply_option(transport: asyncio.BaseTransport, level: int, name: int, value: bytes) -> None:
    """A socket option on a live stack connection (the options the engine knows)."""
    sockobj = transport.get_extra_info("socket")
    if sockobj is None:
        return
    if level == socket.IPPROTO_TCP and name == getattr(socket, "TCP_CONGESTION", 13):
        sockobj.setsockopt(level, name, value.split(b"\0", 1)[0])
    elif len(value) >= 4:
        sockobj.setsockopt(level, name, _int_of(value))


class StreamPump(asyncio.Protocol):
    """Moves bytes between a stack connection and the anp end of the program's socket."""

    def __init__(self, rec: StreamSocket) -> None:
        self.rec = rec
        self.transport: asyncio.Transport | None = None
        self._out: collections.deque[memoryview] = collections.deque()
        self._reading_app = False
        self._stack_eof = False  # the peer sent FIN: shut the pair's write side after _out
        self._program_gone = False  # the program closed: more data from the peer -> RST
        self._lost = False
        self._paused_by_stack = False

    # -- the stack side ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._program_gone:
            # RFC 9293 3.10.4 / RFC 1122 4.2.2.13: data for a closed socket -> reset.
            self._abort()
            return
        if self._out:
            self._out.append(memoryview(data))
            return
        try:
            n = self.rec.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self._on_program_vanished()
            return
        if n < len(data):
            self._out.append(memoryview(data)[n:])
            self._wait_program_room()

    def eof_received(self) -> bool:
        self._stack_eof = True
        if not self._out:
            self._shut_program_side()
        return True  # half-close: the program may still write

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        rec = self.rec
        rec.end_errno = errno_of(exc)
        if exc is not None:
            self._out.clear()  # a reset loses what was not yet delivered, as on Linux
        if not self._out:
            self._finish()

    def pause_writing(self) -> None:
        self._paused_by_stack = True
        self._stop_reading_program()

    def resume_writing(self) -> None:
        self._paused_by_stack = False
        if not self._program_gone and not self._lost:
            self.start_reading_program()

    # -- the program side --------------------------------------------------------

    def start_reading_program(self) -> None:
        if not self._reading_app and not self.rec.closed:
            self._reading_app = True
            self.rec.loop.add_reader(self.rec.fd, self._program_readable)

    def _stop_reading_program(self) -> None:
        if self._reading_app:
            self._reading_app = False
            self.rec.loop.remove_reader(self.rec.fd)

    def _program_readable(self) -> None:
        transport = self.transport
        try:
            data = self.rec.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            if transport is not None and not self._lost:
                transport.write(data)
            return
        self._stop_reading_program()
        if _app_hung_up(self.rec.sock):
            self._on_program_closed()
        elif transport is not None and not self._lost and transport.can_write_eof():
            transport.write_eof()  # shutdown(SHUT_WR): FIN, and keep delivering

    def _wait_program_room(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.pause_reading()  # the window closes until the program reads
        self.rec.loop.add_writer(self.rec.fd, self._flush_to_program)

    def _flush_to_program(self) -> None:
        out = self._out
        try:
            while out:
                buf = out[0]
                n = self.rec.sock.send(buf)
                if n < len(buf):
                    out[0] = buf[n:]
                    return
                out.popleft()
        except BlockingIOError:
            return
        except OSError:
            self.rec.loop.remove_writer(self.rec.fd)
            self._on_program_vanished()
            return
        self.rec.loop.remove_writer(self.rec.fd)
        if self._lost:
            self._finish()
            return
        if self._stack_eof:
            self._shut_program_side()
        if self.transport is not None:
            self.transport.resume_reading()

    def _shut_program_side(self) -> None:
        try:
            self.rec.sock.shutdown(socket.SHUT_WR)  # the program reads EOF
        except OSError:
            pass

    def _on_program_closed(self) -> None:
        """The program closed its socket (or exited): FIN, or RST with SO_LINGER 0."""
        self._program_gone = True
        transport = self.transport
        if transport is None or self._lost:
            self._finish()
            return
        if self.rec.linger_zero or self._out:
            # Closing with unread data sends RST (RFC 2525 2.17; Linux does the same).
            self._abort()
        else:
            transport.close()

    def _on_program_vanished(self) -> None:
        """Writing to the program failed: it is gone; the connection is reset."""
        self._program_gone = True
        self._out.clear()
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.abort()
        else:
            self._finish()

    def _finish(self) -> None:
        """Both directions are done: close the anp end (the program reads what is left)."""
        self._stop_reading_program()
        self.rec.loop.remove_writer(self.rec.fd)
        self.rec.release()


class SiblingChannel(Protocol):
    """The front's link to a sibling worker's socket API (:mod:`.siblings`)."""

    index: int

    async def forward(self, msg: Message) -> Message:
        """Send ``msg`` to the sibling's API and return its reply."""
        ...

    def adopt(self, proxy: RemoteStream) -> None:
        """``proxy`` now stands for the sibling's socket ``proxy.rsid``."""
        ...


class Closable(Protocol):
    def close(self) -> None: ...


class RemoteConn:
    """A connection another worker accepted for a listener of the program: the program's
    end of its socketpair (the sibling pumps the other end), waiting in the accept queue."""

    def __init__(self, link: SiblingChannel, rsid: int, fd: int, data: bytes) -> None:
        self.link = link
        self.rsid = rsid
        self.fd = fd
        self.data = data  # the ACCEPT reply's peer slot + local slot
        self.inode = os.fstat(fd).st_ino

    def take_fd(self) -> int:
        fd, self.fd = self.fd, -1
        return fd

    def close(self) -> None:
        """Never accepted: the sibling sees the program close it and ends the connection."""
        if self.fd >= 0:
            os.close(self.take_fd())


class Listener:
    """A listening socket: the stack's server, and the connections waiting for accept()
    (its own stack's, and on a multi-queue host those its siblings accepted)."""

    def __init__(self, rec: StreamSocket, backlog: int) -> None:
        self.rec = rec
        self.backlog = backlog
        self.queue: collections.deque[StreamPump | RemoteConn] = collections.deque()
        self.server: Any = None
        #: The same listener on the sibling workers (closed with this one).
        self.mirrors: list[Closable] = []
        self.closed = False
        self._owed = 0  # connection bytes the program's descriptor could not take yet
        self._writing = False

    def new_pump(self) -> StreamPump:
        return _QueuedPump(self)

    def enqueue(self, pump: StreamPump) -> None:
        transport = pump.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        bound_ip = self.rec.bound[0] if self.rec.bound is not None else self.rec.wildcard
        if not self.rec.hears(peer[0], bound_ip):
            transport.abort()  # the family this socket does not listen for: RST, as Linux
            self.rec.api.counters["accept_other_family_reset"] += 1
            return
        if len(self.queue) >= self.backlog:
            # Linux (tcp_abort_on_overflow = 0) leaves a client whose handshake finds the
            # accept queue full waiting rather than resetting it; here the handshake is
            # already done, so the connection waits in the queue with its window closed,
            # up to a hard bound.
            self.rec.api.counters["accept_queue_overflows"] += 1
            if len(self.queue) >= ACCEPT_QUEUE_MAX:
                transport.abort()
                return
        transport.pause_reading()  # data waits in the stack until accept()
        self.queue.append(pump)
        self._signal()

    def enqueue_remote(self, conn: RemoteConn) -> None:
        """A sibling accepted ``conn`` (it already kept only this socket's family)."""
        if self.closed:
            conn.close()
            return
        if len(self.queue) >= self.backlog:
            self.rec.api.counters["accept_queue_overflows"] += 1
            if len(self.queue) >= ACCEPT_QUEUE_MAX:
                conn.close()
                return
        self.queue.append(conn)
        self._signal()

    def _signal(self) -> None:
        """One byte per queued connection: the program's descriptor polls readable."""
        self._owed += 1
        if not self._writing:
            self._send_owed()

    def _send_owed(self) -> None:
        # A burst of connections the program is slow to accept can fill the pair's buffer
        # (each one-byte send is a buffer of its own): the bytes wait here, none is lost.
        sock = self.rec.sock
        while self._owed and not self.rec.closed:
            try:
                self._owed -= sock.send(b"\1" * min(self._owed, 65536))
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self.rec.loop.add_writer(self.rec.fd, self._send_owed)
                return
            except OSError:
                self._owed = 0
        if self._writing:
            self._writing = False
            self.rec.loop.remove_writer(self.rec.fd)

    def drop(self, pump: StreamPump) -> None:
        try:
            self.queue.remove(pump)
        except ValueError:
            pass

    def close(self) -> None:
        self.closed = True
        if self._writing:
            self._writing = False
            self.rec.loop.remove_writer(self.rec.fd)
        if self.server is not None:
            self.server.close()
            self.server = None
        for mirror in list(self.mirrors):
            mirror.close()
        self.mirrors.clear()
        while self.queue:
            pump = self.queue.popleft()
            if isinstance(pump, RemoteConn):
                pump.close()
            elif pump.transport is not None:
                pump.transport.abort()


class _QueuedPump(StreamPump):
    """A pump whose connection waits in a listener's accept queue until accept() adopts it."""

    def __init__(self, listener: Listener) -> None:
        super().__init__(listener.rec)  # re-pointed at its own socket by adopt()
        self.listener: Listener | None = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.listener is not None
        self.listener.enqueue(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.listener is not None:  # still queued: nothing of the program to close
            self.listener.drop(self)
            self.listener = None
            return
        super().connection_lost(exc)

    def adopt(self, rec: StreamSocket) -> None:
        """accept(): this connection now pumps into ``rec``'s pair."""
        self.listener = None
        self.rec = rec
        rec.connected(self)
        self.start_reading_program()
        if self.transport is not None:
            self.transport.resume_reading()


class DatagramSocket(SocketRecord, asyncio.DatagramProtocol):
    """A UDP socket of the program: bound on first bind/connect/send."""

    kind = "udp"
    lib_type = socket.SOCK_DGRAM

    def __init__(self, api: SocketApi, sid: int, sock: socket.socket, family: int) -> None:
        super().__init__(api, sid, sock, family)
        self.transport: asyncio.DatagramTransport | None = None
        self.bound_ip = self.wildcard  # what bind() named (sendto binds the wildcard)
        self.peer: tuple[str, int] | None = None
        self.binding: asyncio.Task[None] | None = None
        self._pending: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque()
        self.loop.add_reader(self.fd, self._program_readable)

    def lib_state(self) -> LibState:
        return LibState.CONNECTED if self.peer else LibState.NEW

    def sockname(self) -> tuple[str, int]:
        if self.transport is None:
            return ("0.0.0.0", 0)
        ip, port = _name(self.transport.get_extra_info("sockname"))
        # Like Linux: a wildcard-bound socket names the any-address until connect() picks
        # the source (of the peer's family).
        if self.peer is not None:
            ip = self.api.local_ip(self.peer[0])
        else:
            ip = self.bound_ip
        return (ip, port)

    def peername(self) -> tuple[str, int] | None:
        return self.peer

    def associate(self, peer: tuple[str, int] | None) -> None:
        """connect() on UDP: the peer alone is heard, and its ICMP errors are reported."""
        self.peer = peer
        if self.transport is not None:
            self.transport.connect(peer)  # type: ignore[attr-defined]

    async def bind(self, ip: str, port: int) -> None:
        if self.transport is not None:
            raise OSError(errno.EINVAL, "already bound")
        # The stack's endpoint hears the families this socket hears on Linux, so an
        # AF_INET and an IPV6_V6ONLY socket may share the port (datagram_received still
        # filters for a socket bound to one address).
        v4, v6 = self.hears("0.0.0.0", ip), self.hears("::", ip)
        await self.api.stack.create_datagram_endpoint(
            lambda: self, local_addr=(ip, port), v4=v4, v6=v6, share_port=self.shares_port,
            reuse_port=self.reuseport, allow_broadcast=self._flag(socket.SO_BROADCAST),
        )  # fmt: skip
        assert self.transport is not None
        self.apply_options(self.transport)
        self.bound_ip = ip
        await self.api.udp_bound(self)  # the same port on the sibling workers, if any

    @property
    def shares_port(self) -> bool:
        """SO_REUSEADDR (or SO_REUSEPORT) was set before bind: the socket may share its
        port with others that set it (the stack's ``share_port``)."""
        return self.reuseaddr or self.reuseport

    def set_option(self, level: int, name: int, value: bytes) -> None:
        super().set_option(level, name, value)
        if self.transport is not None:
            # SO_BROADCAST (the library refuses a broadcast without it; this lets one with
            # it through), IP_TTL, IP_TOS and their IPv6 kin shape what the stack sends.
            apply_option(self.transport, level, name, value)


    @property
    def port(self) -> int:
        return self.sockname()[1]

    def ensure_bound(self) -> None:
        """Bind to an ephemeral port in the background (first send, connect)."""
        if self.transport is None and self.binding is None:
            self.binding = self.loop.create_task(self._bind_any())

    async def _bind_any(self) -> None:
        try:
            await self.bind(self.wildcard, 0)
        except OSError as e:
            self.pending_error = e.errno or errno.EIO
            self._pending.clear()
        finally:
            self.binding = None
        self._send_pending()

    # -- DatagramProtocol (the stack side) --------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        host, port = _name(addr)
        if self.peer is not None and (host, port) != self.peer:
            return  # a connected UDP socket hears only its peer
        if not self.hears(host, self.bound_ip):
            self.api.counters["udp_other_family_dropped"] += 1
            return
        ttl = getattr(self.transport, "rx_ttl", 0)  # (the stack's transports have it)
        self._to_program(pack_udp_header(host, port, ttl=ttl), data)

    def error_received(self, exc: Exception) -> None:
        if self.peer is not None:  # Linux reports ICMP errors to connected sockets only
            self._to_program(pack_udp_header("0.0.0.0", 0, errno_of(exc)), b"")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.release()

    def _to_program(self, header: bytes, data: bytes) -> None:
        try:
            self.sock.sendmsg([header, data])
        except BlockingIOError:
            self.api.counters["udp_program_queue_full"] += 1  # UDP: drop, as a full rcvbuf
        except OSError:
            self.release()

    # -- the program side --------------------------------------------------------

    def _program_readable(self) -> None:
        for _ in range(64):
            try:
                raw = self.sock.recv(65536 + UDP_HDR.size)
            except BlockingIOError:
                return
            except OSError:
                raw = b""
            if not raw:
                self.release()  # the program closed the socket
                return
            if len(raw) < UDP_HDR.size:
                continue
            addr = unpack_udp_header(raw)
            payload = raw[UDP_HDR.size :]
            if self.transport is None:
                if len(self._pending) < UDP_PENDING_MAX:
                    self._pending.append((payload, addr))
                self.ensure_bound()
                continue
            self._send(payload, addr)

    def _send_pending(self) -> None:
        while self._pending and self.transport is not None:
            payload, addr = self._pending.popleft()
            self._send(payload, addr)

    def _send(self, payload: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            self.transport.sendto(payload, None if addr == self.peer else addr)
        except OSError as e:
            self.pending_error = e.errno or errno.EIO
        except ValueError:  # another address on a connected socket
            self.api.counters["udp_send_other_peer_dropped"] += 1

    def release(self) -> None:
        if self.closed:
            return
        if self.binding is not None:
            self.binding.cancel()
        transport, self.transport = self.transport, None
        super().release()
        self.api.udp_released(self)
        if transport is not None:
            transport.close()



class PingSocket(DatagramSocket):
    """A ping socket of the program (``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`` or
    AF_INET6 with IPPROTO_ICMPV6, what
    iputils ``ping`` opens first): bound to an echo identifier instead of a port, it sends
    the echo requests the program writes and gets the replies to that identifier
    (``transport/ping.py``)."""

    kind = "icmp"

    async def bind(self, ip: str, port: int) -> None:
        if self.transport is not None:
            raise OSError(errno.EINVAL, "already bound")
        await self.api.stack.create_ping_endpoint(
            lambda: self, local_addr=(ip, port), v6=self.family == socket.AF_INET6
        )
        assert self.transport is not None
        self.apply_options(self.transport)
        self.bound_ip = ip

def names_of(data: bytes) -> tuple[tuple[str, int], tuple[str, int]]:
    """(sockname, peername) from an ACCEPT reply's peer slot + local slot."""
    return unpack_sockaddr(data[ADDR_SLOT : 2 * ADDR_SLOT]), unpack_sockaddr(data[:ADDR_SLOT])


class RemoteStream(SocketRecord):
    """A TCP socket of the program that a sibling worker's stack serves (one it accepted,
    or one the program connected through it): the program's descriptor talks to the
    sibling directly; the calls that need the stack (options, SO_ERROR, why it ended, and
    the names when they are not known here) are forwarded to the sibling's socket
    ``rsid``. There is no anp end here, so nothing to pump or watch: the sibling says when
    it forgot the socket (:mod:`.siblings`)."""

    kind = "tcp"
    lib_type = socket.SOCK_STREAM

    def __init__(
        self, api: SocketApi, sid: int, family: int, link: SiblingChannel, rsid: int,
        inode: int, names: tuple[tuple[str, int], tuple[str, int]] | None = None,
    ) -> None:  # fmt: skip
        # No SocketRecord.__init__: the record has no descriptor of its own.
        self.api = api
        self.sid = sid
        self.fd = -1
        self.family = family
        self.inode = inode
        self.options = {}
        self.pending_error = 0
        self.closed = False
        self.link = link
        self.rsid = rsid
        self.names = names

    def lib_state(self) -> LibState:
        return LibState.CONNECTED

    def sockname(self) -> tuple[str, int]:
        return self.names[0] if self.names is not None else (self.wildcard, 0)

    def peername(self) -> tuple[str, int] | None:
        return self.names[1] if self.names is not None else None

    def release(self) -> None:
        if not self.closed:
            self.closed = True
            self.api.forget(self)
