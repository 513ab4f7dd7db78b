"""The socket-API server: answers ``libanp_preload.so`` for the stack of this process.

Listens on a Unix ``SOCK_SEQPACKET`` socket (``anp run`` hands its path to the program in
``ANP_SOCKET``; ``anp up`` serves one at ``/run/anp/<TAP>.api.sock`` for ``anp run
--attach``). Each process of a program opens its own control connection; socket ids are
global to the server, so a forked child can use an inherited socket. Requests are answered
at once -- nothing here waits for the network: a TCP connect answers "started" and its end
reaches the program through its descriptor (see :mod:`.sockets`).

Routing is the stack's: a destination it has no route to is ENETUNREACH; the library keeps
loopback for the kernel before asking.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import logging
import os
import resource
import socket
import stat
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..transport.resolve import addr_to_bytes
from .protocol import DATA_MAX, MSG, LibState, Message, Op, pack_sockaddr, unpack_sockaddr
from .sockets import (
    DatagramSocket,
    HangupWatcher,
    Listener,
    PingSocket,
    RemoteConn,
    RemoteStream,
    SocketRecord,
    StreamPump,
    StreamSocket,
    errno_of,
    names_of,
)

if TYPE_CHECKING:
    from ..stack import Stack
    from .siblings import Siblings

log = logging.getLogger("anp_async.preload")

#: Linux's default net.core.somaxconn: the largest accept queue listen() gets.
SOMAXCONN = 4096
#: Sockets the server holds at once (every program together), and ended streams whose
#: end reason a program may still ask for.
MAX_SOCKETS = 65536
MAX_ENDED = 4096

Reply = Message | tuple[Message, int]
Handler = Callable[[SocketRecord | None, Message, int], "Reply | Coroutine[Any, Any, Reply]"]


def _err(op: int, code: int) -> Message:
    return Message(op, res=-code)


def _op_counter(op: int) -> str:
    try:
        return f"op_{Op(op).name.lower()}"
    except ValueError:
        return "op_unknown"


class _Client:
    """One control connection (one process of the program). The library sends one request
    at a time and waits for its reply, so replies never overtake each other."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


class SocketApi:
    """Stack sockets for preloaded programs, served on a Unix socket at ``path``.

    On a multi-queue host the front worker's API is given its ``siblings``' API paths
    ({worker index: path}): the program's listeners and UDP ports then reach every worker
    (:mod:`.siblings`).
    """

    def __init__(self, stack: Stack, path: str, siblings: dict[int, str] | None = None) -> None:
        self.stack = stack
        self.path = path
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.counters: collections.Counter[str] = collections.Counter()
        self.watcher = HangupWatcher(self.loop)
        self._listen_sock: socket.socket | None = None
        self._clients: dict[int, _Client] = {}
        self._socks: dict[int, SocketRecord] = {}
        self._by_inode: dict[int, int] = {}
        self._ended: collections.OrderedDict[int, SocketRecord] = collections.OrderedDict()
        #: Stream sockets bound but not listening, by port (an IPv4 one and an
        #: IPV6_V6ONLY one may share a port, as on Linux).
        self._tcp_bound: dict[int, list[StreamSocket]] = {}
        self._next_sid = 1
        self._handlers: dict[int, Handler] = {
            Op.SOCKET: self._op_socket,
            Op.BIND: self._op_bind,
            Op.LISTEN: self._op_listen,
            Op.ACCEPT: self._op_accept,
            Op.CONNECT: self._op_connect,
            Op.NAME: self._op_name,
            Op.SETOPT: self._op_setopt,
            Op.GETOPT: self._op_getopt,
            Op.EOF: self._op_eof,
            Op.IDENTIFY: self._op_identify,
            Op.IFADDRS: self._op_ifaddrs,
        }
        self.siblings: Siblings | None = None
        if siblings:
            from .siblings import Siblings

            self.siblings = Siblings(self, siblings)

    # ------------------------------------------------------------------ serving

    async def start(self) -> None:
        """Listen at ``path`` (the directory is made; a stale socket is replaced)."""
        _raise_fd_limit()
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(self.path).st_mode):
                os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.bind(self.path)
        os.chmod(self.path, 0o666)  # programs may drop privileges
        sock.listen(128)
        sock.setblocking(False)
        self._listen_sock = sock
        self.loop.add_reader(sock.fileno(), self._accept_client)
        if self.siblings is not None:
            self.siblings.start()

    def close(self) -> None:
        """Stop serving; every program socket ends (programs see EOF / EPIPE)."""
        if self._listen_sock is not None:
            self.loop.remove_reader(self._listen_sock.fileno())
            self._listen_sock.close()
            self._listen_sock = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        if self.siblings is not None:
            self.siblings.close()
        for client in list(self._clients.values()):
            self._drop_client(client)
        for rec in list(self._socks.values()):
            if isinstance(rec, StreamSocket):
                if rec.listener is not None:
                    rec.listener.close()
                if rec.pump is not None and rec.pump.transport is not None:
                    rec.pump.transport.abort()
                if rec.connecting is not None:
                    rec.connecting.cancel()
            rec.release()
        self.watcher.close()

    def stats(self) -> dict[str, Any]:
        kinds = collections.Counter(r.kind for r in self._socks.values())
        out: dict[str, Any] = dict(self.counters) | {
            "clients": len(self._clients),
            "sockets_tcp": kinds["tcp"],
            "sockets_udp": kinds["udp"],
        }
        if self.siblings is not None:
            out["siblings"] = self.siblings.stats()
        return out

    def _accept_client(self) -> None:
        assert self._listen_sock is not None
        try:
            conn, _ = self._listen_sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        client = _Client(conn)
        self._clients[conn.fileno()] = client
        self.counters["control_connections"] += 1
        self.loop.add_reader(conn.fileno(), self._client_readable, client)

    def _drop_client(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if self._clients.pop(fd, None) is not None:
            self.loop.remove_reader(fd)
        client.sock.close()

    def _client_readable(self, client: _Client) -> None:
        try:
            raw, fds, _flags, _addr = socket.recv_fds(client.sock, MSG.size, 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            raw, fds = b"", []
        if not raw:
            self._drop_client(client)
            return
        fd = fds[0] if fds else -1
        try:
            req = Message.unpack(raw)
        except ValueError as e:
            log.warning("socket API: bad request (%s); dropping the client", e)
            if fd >= 0:
                os.close(fd)
            self._drop_client(client)
            return
        self.counters[_op_counter(req.op)] += 1
        result = self._dispatch(req, fd)
        if isinstance(result, Coroutine):
            # Answered later: stop reading this client until then.
            self.loop.remove_reader(client.sock.fileno())
            task = self.loop.create_task(result)
            task.add_done_callback(functools.partial(self._async_done, client, req))
        else:
            self._reply(client, result)

    def _async_done(self, client: _Client, req: Message, task: asyncio.Task[Reply]) -> None:
        if task.cancelled():
            result: Reply = _err(req.op, errno.EINTR)
        elif task.exception() is not None:
            result = self._failed(req, task.exception())  # type: ignore[arg-type]
        else:
            result = task.result()
        if self._clients.get(client.sock.fileno()) is client:
            self.loop.add_reader(client.sock.fileno(), self._client_readable, client)
            self._reply(client, result)

    def _reply(self, client: _Client, result: Reply) -> None:
        msg, fd = (result, -1) if isinstance(result, Message) else result
        try:
            socket.send_fds(client.sock, [msg.pack()], [fd] if fd >= 0 else [])
        except OSError:
            self._drop_client(client)  # the process is gone
        finally:
            if fd >= 0:
                os.close(fd)

    def _failed(self, req: Message, exc: BaseException) -> Message:
        code = errno_of(exc)
        if code == errno.EIO:
            log.exception("socket API: %s failed", Op(req.op).name, exc_info=exc)
        return _err(req.op, code)

    def _dispatch(self, req: Message, fd: int) -> Any:
        handler = self._handlers.get(req.op)
        if handler is None:
            if fd >= 0:
                os.close(fd)
            return _err(req.op, errno.EINVAL)
        rec = None
        if req.op not in (Op.SOCKET, Op.IDENTIFY, Op.IFADDRS):
            rec = self._socks.get(req.sid)
            if rec is None and req.op in (Op.NAME, Op.EOF, Op.GETOPT):
                rec = self._ended.get(req.sid)
            if rec is None:
                if fd >= 0:
                    os.close(fd)
                return _err(req.op, errno.EBADF)
            if isinstance(rec, RemoteStream) and (req.op != Op.NAME or rec.names is None):
                if fd >= 0:
                    os.close(fd)
                return self._forward(rec, req)
        try:
            return handler(rec, req, fd)
        except OSError as e:
            return self._failed(req, e)
        except (ValueError, OverflowError):
            return _err(req.op, errno.EINVAL)

    async def _forward(self, rec: RemoteStream, req: Message) -> Message:
        """A call on a connection a sibling serves: the sibling's answer."""
        self.counters["forwarded"] += 1
        reply = await rec.link.forward(
            Message(req.op, sid=rec.rsid, res=req.res, a=req.a, data=req.data)
        )
        return Message(req.op, sid=rec.sid, res=reply.res, a=reply.a, data=reply.data)

    async def udp_bound(self, rec: DatagramSocket) -> None:
        """``rec`` got a port: the siblings bind it too (their datagrams come here)."""
        if self.siblings is not None and not rec.closed:
            await self.siblings.mirror_udp(rec)

    def udp_released(self, rec: DatagramSocket) -> None:
        if self.siblings is not None:
            self.siblings.unmirror_udp(rec)

    # ------------------------------------------------------------------ registry

    def forget(self, rec: SocketRecord) -> None:
        """A record ended: keep a stream's names and end reason for a while."""
        if self._socks.pop(rec.sid, None) is None:
            return
        self._by_inode.pop(rec.inode, None)
        if isinstance(rec, RemoteStream) or (
            isinstance(rec, StreamSocket) and rec.listener is None
        ):
            self._ended[rec.sid] = rec
            while len(self._ended) > MAX_ENDED:
                self._ended.popitem(last=False)

    def _add(self, rec: SocketRecord, inode: int) -> int:
        rec.inode = inode
        self._socks[rec.sid] = rec
        if inode:
            self._by_inode[inode] = rec.sid
        return rec.sid

    def _new_sid(self) -> int:
        sid = self._next_sid
        self._next_sid = sid + 1 if sid < 0x7FFFFFFF else 1
        return sid

    def local_ip(self, peer: str) -> str:
        """The stack's address that talks to ``peer`` (its family's)."""
        if ":" in peer:
            return self.stack.ip6 or "::"
        return self.stack.ip

    def _is_ours(self, ip: str) -> bool:
        """An address a socket may bind: a wildcard or one of the stack's."""
        ours = {"0.0.0.0", "::", self.stack.ip}
        if self.stack.ip6:
            ours.add(self.stack.ip6)
        return ip in ours

    def _routable(self, ip: str) -> bool:
        return self.stack.next_hop(addr_to_bytes(ip)) is not None

    def unbind_tcp(self, port: int, rec: StreamSocket) -> None:
        same = self._tcp_bound.get(port, [])
        if rec in same:
            same.remove(rec)
            if not same:
                del self._tcp_bound[port]

    def _hold_port(self, port: int, rec: StreamSocket) -> None:
        self._tcp_bound.setdefault(port, []).append(rec)

    def _port_taken(self, port: int, rec: StreamSocket, ip: str) -> bool:
        """Would binding ``rec`` to ``ip``:``port`` clash (Linux: EADDRINUSE)? Two sockets
        clash when they would hear the same family there (an AF_INET socket and an
        IPV6_V6ONLY one, set before bind, do not; an AF_INET6 dual-stack one clashes
        with both) -- unless both set SO_REUSEPORT, or both set SO_REUSEADDR and the
        other is not listening (Linux's inet_csk_bind_conflict; ``_tcp_bound`` holds
        the bound sockets that do not listen, the stack's listeners the others)."""
        v4, v6 = rec.hears("0.0.0.0", ip), rec.hears("::", ip)
        for other in self._tcp_bound.get(port, []):
            assert other.bound is not None
            if (rec.reuseport and other.reuseport) or (rec.reuseaddr and other.reuseaddr):
                continue
            ip2 = other.bound[0]
            if (v4 and other.hears("0.0.0.0", ip2)) or (v6 and other.hears("::", ip2)):
                return True
        return self.stack.tcp.host.listen_conflict(port, v4=v4, v6=v6, reuseport=rec.reuseport)

    # ------------------------------------------------------------------ operations

    def _op_socket(self, _: SocketRecord | None, req: Message, fd: int) -> Message:
        if fd < 0:
            return _err(req.op, errno.EINVAL)
        sock = socket.socket(fileno=fd)
        if len(self._socks) >= MAX_SOCKETS:
            sock.close()
            return _err(req.op, errno.EMFILE)
        kind, proto, family = req.a[0] & 0xFFFF, req.a[0] >> 16, req.a[3]
        if family not in (socket.AF_INET, socket.AF_INET6):
            sock.close()
            return _err(req.op, errno.EAFNOSUPPORT)
        sid = self._new_sid()
        rec: SocketRecord
        if kind == socket.SOCK_STREAM:
            rec = StreamSocket(self, sid, sock, family)
            rec.watch_hangup()
        elif kind == socket.SOCK_DGRAM and proto in (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6):
            rec = PingSocket(self, sid, sock, family)
        elif kind == socket.SOCK_DGRAM:
            rec = DatagramSocket(self, sid, sock, family)
        else:
            sock.close()
            return _err(req.op, errno.ESOCKTNOSUPPORT)
        # a0: the stack's IPv4 broadcast address (as its bytes lie in memory), for the
        # library's SO_BROADCAST check on sendto/connect.
        bcast = self.stack.iface.broadcast or bytes(4)
        return Message(
            req.op, sid=sid, res=self._add(rec, req.inode(1)),
            a=(int.from_bytes(bcast, "little", signed=True), 0, 0, 0),
        )  # fmt: skip

    def _op_bind(self, rec: SocketRecord | None, req: Message, _fd: int) -> Any:
        ip, port = unpack_sockaddr(req.data)
        if not self._is_ours(ip):
            return _err(req.op, errno.EADDRNOTAVAIL)
        if not 0 <= port <= 65535:
            return _err(req.op, errno.EINVAL)
        if isinstance(rec, DatagramSocket):
            return self._bind_udp(rec, req, ip, port)
        assert isinstance(rec, StreamSocket)
        if rec.bound is not None or rec.lib_state() != LibState.NEW:
            return _err(req.op, errno.EINVAL)
        if port == 0:
            port = self.stack.tcp.pick_port(b"", 0)
            while port in self._tcp_bound:
                port = self.stack.tcp.pick_port(b"", 0)
        elif self._port_taken(port, rec, ip):
            return _err(req.op, errno.EADDRINUSE)
        rec.bound = (ip, port)
        self._hold_port(port, rec)
        return Message(req.op)

    async def _bind_udp(self, rec: DatagramSocket, req: Message, ip: str, port: int) -> Message:
        await rec.bind(ip, port)
        return Message(req.op)

    def _op_listen(self, rec: SocketRecord | None, req: Message, _fd: int) -> Any:
        if not isinstance(rec, StreamSocket):
            return _err(req.op, errno.EOPNOTSUPP)
        backlog = min(max(req.a[0], 1), SOMAXCONN)
        if rec.listener is not None:
            rec.listener.backlog = backlog  # listen() again adjusts the backlog
            return Message(req.op)
        if rec.lib_state() != LibState.NEW:
            return _err(req.op, errno.EINVAL)
        if rec.bound is None:  # listen() without bind(): an ephemeral port, as Linux does
            self._op_bind(rec, Message(Op.BIND, data=pack_sockaddr(rec.wildcard, 0)), -1)
        assert rec.bound is not None
        return self._listen(rec, req, backlog)

    async def _listen(self, rec: StreamSocket, req: Message, backlog: int) -> Message:
        assert rec.bound is not None
        listener = Listener(rec, backlog)
        self.unbind_tcp(rec.bound[1], rec)  # the stack's listener holds the port now
        # The stack's listener takes the families a Linux socket like this one hears
        # (AF_INET: IPv4; AF_INET6: both, or IPv6 with IPV6_V6ONLY or a v6 address), so a
        # SYN of the other family meets RST at once; Listener.enqueue still checks.
        v4, v6 = rec.hears("0.0.0.0", rec.bound[0]), rec.hears("::", rec.bound[0])
        family = socket.AF_UNSPEC if v4 and v6 else socket.AF_INET if v4 else socket.AF_INET6
        try:
            # (a listener clashes with every other one on its port unless both set
            # SO_REUSEPORT: a bound SO_REUSEADDR socket cannot listen where one listens)
            listener.server = await self.stack.create_server(
                listener.new_pump, "0.0.0.0", rec.bound[1], backlog=backlog, family=family,
                reuse_port=rec.reuseport,
            )  # fmt: skip
        except OSError:
            self._hold_port(rec.bound[1], rec)
            raise
        rec.listener = listener  # the hang-up watcher still tells when the program closes it
        if self.siblings is not None:
            try:
                await self.siblings.mirror_listener(listener)
            except OSError:
                listener.close()
                rec.listener = None
                if not rec.closed:
                    self._hold_port(rec.bound[1], rec)
                raise
        return Message(req.op)

    def _op_accept(self, rec: SocketRecord | None, req: Message, _fd: int) -> Any:
        if not isinstance(rec, StreamSocket) or rec.listener is None:
            return _err(req.op, errno.EINVAL)
        queue = rec.listener.queue
        if not queue:
            return _err(req.op, errno.EAGAIN)
        pump = queue.popleft()
        if isinstance(pump, RemoteConn):
            return self._accept_remote(rec, req, pump)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sid = self._new_sid()
        new = StreamSocket(self, sid, ours, rec.family)
        self._add(new, os.fstat(theirs.fileno()).st_ino)
        pump.adopt(new)  # type: ignore[attr-defined]
        local, peer = new.sockname(), new.peername() or (new.wildcard, 0)
        self.counters["accepted"] += 1
        reply = Message(req.op, sid=sid, data=pack_sockaddr(*peer) + pack_sockaddr(*local))
        return reply, theirs.detach()

    def _accept_remote(self, rec: StreamSocket, req: Message, conn: RemoteConn) -> Reply:
        """accept() of a connection a sibling worker serves: the program gets the end of
        the sibling's socketpair; here a record that forwards calls to the sibling."""
        sid = self._new_sid()
        proxy = RemoteStream(
            self, sid, rec.family, conn.link, conn.rsid, conn.inode, names_of(conn.data)
        )
        self._add(proxy, conn.inode)
        conn.link.adopt(proxy)
        self.counters["accepted"] += 1
        self.counters[f"accepted_worker{conn.link.index}"] += 1
        return Message(req.op, sid=sid, data=conn.data), conn.take_fd()

    def _op_connect(self, rec: SocketRecord | None, req: Message, fd: int) -> Any:
        if isinstance(rec, DatagramSocket):
            return self._connect_udp(rec, req)
        assert isinstance(rec, StreamSocket)
        if fd >= 0:
            os.close(fd)  # CONNECT carries no descriptor
        filler = req.a[0]
        state = rec.lib_state()
        refusal = {
            LibState.CONNECTING: errno.EALREADY,
            LibState.CONNECTED: errno.EISCONN,
            LibState.LISTENING: errno.EINVAL,
        }.get(state)
        if refusal is None and rec.end_errno:
            refusal = rec.end_errno  # a failed connect reports its error again
        if refusal is None and rec.names is not None:
            refusal = errno.EISCONN
        if refusal is None and not req.data:
            refusal = errno.EINVAL
        if refusal is not None:
            _drain_filler(rec, filler)
            return _err(req.op, refusal)
        ip, port = unpack_sockaddr(req.data)
        if port == 0 or not self._routable(ip):
            _drain_filler(rec, filler)
            return _err(req.op, errno.ECONNREFUSED if port == 0 else errno.ENETUNREACH)
        if self.siblings is not None:
            link = self.siblings.pick_for_connect(rec.bound[1] if rec.bound else 0, port)
            if link is not None:  # that worker connects it (the replies reach it)
                return self.siblings.connect_on(link, rec, req)
        return self.connect_here(rec, req)

    def connect_here(self, rec: StreamSocket, req: Message) -> Message:
        """Start the TCP connect on this stack (the reply: started)."""
        ip, port = unpack_sockaddr(req.data)
        rec.connecting = self.loop.create_task(self._connect(rec, ip, port, req.a[0]))
        self.counters["connects"] += 1
        return Message(req.op)

    def replace(self, rec: SocketRecord, new: SocketRecord) -> None:
        """``new`` answers for ``rec``'s socket id from now on (same id, same inode)."""
        self._socks[rec.sid] = new

    async def _connect(
        self,
        rec: StreamSocket,
        ip: str,
        port: int,
        filler: int,
    ) -> None:
        local = (self.local_ip(ip), rec.bound[1]) if rec.bound is not None else None
        err = 0
        pump: StreamPump | None = None
        try:
            _, pump = await self.stack.create_connection(
                lambda: StreamPump(rec), ip, port, local_addr=local, tcp_config=self._config(rec),
                tos=rec.traffic_class(":" in ip),
            )  # fmt: skip
        except OSError as e:
            err = errno_of(e)
        finally:
            rec.connecting = None
        if rec.bound is not None:
            self.unbind_tcp(rec.bound[1], rec)  # the connection holds the port now
        if rec.closed:
            if pump is not None and pump.transport is not None:
                pump.transport.abort()
            return
        _drain_filler(rec, filler)  # the program's descriptor polls writable now
        if err:
            rec.pending_error = rec.end_errno = err
            with contextlib.suppress(OSError):
                rec.sock.shutdown(socket.SHUT_WR)  # the program reads EOF, then the error
            return
        assert pump is not None
        self.watcher.unwatch(rec.fd)
        rec.connected(pump)
        pump.start_reading_program()

    def _config(self, rec: StreamSocket) -> Any:
        """The connection's TCP configuration with the options set before connect() that
        matter during the handshake (the rest are applied once it is connected)."""
        overrides: dict[str, Any] = {}
        nodelay = rec.nodelay()
        if nodelay is not None:
            overrides["nodelay"] = nodelay
        timeout_ms = rec.int_option(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        if timeout_ms:  # RFC 5482; Linux applies it to SYN retransmissions too
            overrides["user_timeout"] = timeout_ms / 1000.0
        syn_count = rec.int_option(socket.IPPROTO_TCP, socket.TCP_SYNCNT)
        if syn_count:  # SYN retransmissions before connect() gives up (ETIMEDOUT)
            overrides["syn_retries"] = syn_count
        return self.stack.tcp.host.conn_config(**overrides)

    async def _connect_udp(self, rec: DatagramSocket, req: Message) -> Message:
        if not req.data:
            rec.associate(None)  # connect(AF_UNSPEC): dissolve the association
            return Message(req.op)
        ip, port = unpack_sockaddr(req.data)
        if not self._routable(ip):
            return _err(req.op, errno.ENETUNREACH)
        if rec.transport is None:
            await rec.bind(rec.wildcard, 0)
        rec.associate((ip, port))
        return Message(req.op)

    def _op_name(self, rec: SocketRecord | None, req: Message, _fd: int) -> Message:
        assert rec is not None
        if req.a[0]:
            peer = rec.peername()
            if peer is None:
                return _err(req.op, errno.ENOTCONN)
            return Message(req.op, data=pack_sockaddr(*peer))
        return Message(req.op, data=pack_sockaddr(*rec.sockname()))

    def _op_setopt(self, rec: SocketRecord | None, req: Message, _fd: int) -> Message:
        assert rec is not None
        try:
            rec.set_option(req.a[0], req.a[1], req.data)
        except OSError as e:  # a value or an option Linux refuses
            return _err(req.op, e.errno or errno.EINVAL)
        return Message(req.op)

    def _op_getopt(self, rec: SocketRecord | None, req: Message, _fd: int) -> Message:
        assert rec is not None
        level, name = req.a[0], req.a[1]
        if level == socket.SOL_SOCKET and name == socket.SO_ERROR:
            value = rec.take_error().to_bytes(4, "little")
        elif (level, name) == (socket.IPPROTO_IP, socket.IP_OPTIONS):
            # The stack sends no IP options and keeps none a peer sent: an empty answer,
            # as Linux gives (sshd refuses a connection whose IP_OPTIONS are not empty).
            value = rec.option(level, name) or b""
        else:
            try:
                value = rec.option(level, name) or (0).to_bytes(4, "little")
            except OSError as e:  # (IP_MTU on a socket without a peer: ENOTCONN)
                return _err(req.op, e.errno or errno.EINVAL)
        return Message(req.op, data=value[: max(0, min(req.a[2] or 4, DATA_MAX))])

    def _op_eof(self, rec: SocketRecord | None, req: Message, _fd: int) -> Message:
        if isinstance(rec, StreamSocket) and rec.end_errno:
            code, rec.end_errno = rec.end_errno, 0
            return _err(req.op, code)
        return Message(req.op)

    def _op_ifaddrs(self, _: SocketRecord | None, req: Message, _fd: int) -> Message:
        """The stack's addresses, for the library's getifaddrs()."""
        stack = self.stack
        v6 = stack.v6
        data = (
            stack.ip_b + bytes([stack.iface.prefix_len])
            + (v6.ip_b + bytes([v6.prefix_len]) if v6 is not None else bytes(17))
        )  # fmt: skip
        return Message(req.op, data=data)

    def _op_identify(self, _: SocketRecord | None, req: Message, _fd: int) -> Message:
        sid = self._by_inode.get(req.inode(0))
        rec = self._socks.get(sid) if sid is not None else None
        if rec is None:
            return _err(req.op, errno.ENOENT)
        return Message(
            req.op, sid=rec.sid, res=rec.sid, a=(rec.lib_type, int(rec.lib_state()), rec.family, 0)
        )


def _drain_filler(rec: StreamSocket, filler: int) -> None:
    """Read away the bytes the library filled the program's send buffer with before
    connect(): its descriptor polls writable again, as the kernel's does when a connect
    ends (the library gives the buffer its size back at the program's next call)."""
    left = filler
    while left > 0:
        try:
            got = rec.sock.recv(min(left, 65536))
        except OSError:
            break
        if not got:
            break
        left -= len(got)


def _raise_fd_limit() -> None:
    """Each program socket holds one descriptor here: allow as many as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.asynccontextmanager
async def serve_socket_api(stack: Stack, path: str) -> AsyncIterator[SocketApi]:
    """Serve the socket API for ``stack`` at ``path`` while the block runs."""
    api = SocketApi(stack, path)
    await api.start()
    try:
        yield api
    finally:
        api.close()
