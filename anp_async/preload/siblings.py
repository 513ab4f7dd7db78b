"""One program's sockets on every worker of a multi-queue host (``anp run --queues N``).

On a multi-queue host (:mod:`anp_async.mq`) each worker is a whole stack on one queue of
the TAP, and the kernel steers each flow to one queue. A preloaded program talks to one
socket API, served by the *front* worker (worker 0) at the program's path; every other
worker (a *sibling*) serves a :class:`SiblingApi` at a path of its own
(:func:`sibling_api_path`), whose one client is the front. The front speaks the library's
own protocol (:mod:`.protocol`) to the siblings: it does for the program, on each sibling,
what the library does on the front.

- **listen()**: the front listens, then opens a socket on every sibling with the same
  options, binds the same address and listens (like ``SO_REUSEPORT``). The front holds
  the "program's end" of each such sibling listener, which gets one byte per connection
  the sibling accepted; for each byte the front sends ACCEPT and receives the program's
  end of the new connection's socketpair (``SCM_RIGHTS``) with its addresses. The sibling
  pumps the other end to its own TCP connection; the front queues the descriptor on the
  program's listener beside its own connections (one byte each), so accept(), poll and
  epoll in the C library are unchanged. After accept() the program's descriptor talks to
  the sibling directly: no byte of the connection crosses the front.
- **calls on such a socket** (options, SO_ERROR, why it ended) reach the front, which
  forwards them to the sibling that serves the connection
  (:class:`~.sockets.RemoteStream`); its names come with the accept. A sibling tells the
  front (``RELEASED``, the one message the library never sees) which handed-out sockets
  it has forgotten, so the front's records end too.
- **UDP**: a socket that gets a port on the front gets the same port on every sibling;
  a sibling's datagrams come to the front over a socketpair and are written into the
  program's socket as if the front had received them. Datagrams the program sends leave
  from the front (any queue may send; replies are steered by the peer's ports).
- **connect()**: the program's TCP connects take turns between the front and the
  siblings that are up. For a sibling's turn the front sends it a copy of the socket's
  anp end (SOCKET with the descriptor), the options set so far and the CONNECT; the
  sibling drains the handshake filler, connects from a port the steering function maps
  to its own queue and pumps, exactly as the front would; the front's record becomes a
  forwarding one under the same socket id. A socket the program bound to a port first
  goes to the worker whose queue that port and the peer's port steer to (the front
  when it is that worker), with its BIND, so every reply reaches the worker that holds
  the connection, whatever port was chosen. The price is one round
  trip to the sibling per connect (its SOCKET, options and CONNECT pipelined); what it
  buys is that a client program's connections use every worker's core, not the front's
  alone (``anp bench preload --queues 1,2`` measures a C client with 64 connections).
- **a sibling that dies** takes its connections with it (their descriptors read EOF, and
  ECONNRESET when the library asks why); the front keeps serving, reconnects when the
  supervisor has restarted the worker, and listens and binds there again. The front
  itself is the program's one API: if it dies, every socket of the program ends (as the
  one stack's death ends them with one queue).

Why a client of the siblings' ordinary API rather than a protocol of its own between
workers: the sibling's side is the same tested code that serves programs (records, pumps,
back-pressure, hang-up rules), the handover is the accept the library already does, and
the only new message is ``RELEASED``. The cost is one request/reply between front and
sibling per accepted or connected socket (pipelined, at most :data:`MAX_IN_FLIGHT` in
flight); the bytes of a connection never cross the front.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from ..nic.steering import steer_queue
from .protocol import MSG, UDP_HDR, Message, Op, pack_sockaddr, unpack_udp_header
from .server import SocketApi, _Client
from .sockets import (
    DatagramSocket,
    Listener,
    RemoteConn,
    RemoteStream,
    SocketRecord,
    StreamSocket,
)

if TYPE_CHECKING:
    from ..stack import Stack

log = logging.getLogger("anp_async.preload")

#: Requests the front has outstanding on one sibling at once (the rest wait their turn),
#: so a sibling's replies always fit its socket's send buffer.
MAX_IN_FLIGHT = 64
#: How often the front tries to reach a sibling that is down (or not yet up).
RECONNECT_EVERY = 0.2
#: Socket ids a RELEASED message carries (64 bytes of data).
RELEASED_PER_MSG = 16
#: Sockets a sibling forgot before the front adopted them (an accepted connection that
#: ended while queued); bounded, oldest forgotten first.
MAX_EARLY_RELEASED = 4096


def sibling_api_path(api: str, index: int) -> str:
    """Worker ``index``'s own socket API beside the program's (``X.api.sock`` ->
    ``X.api.w1.sock``)."""
    base = api[:-5] if api.endswith(".sock") else api
    return f"{base}.w{index}.sock"


def _check(reply: Message) -> Message:
    if reply.res < 0:
        raise OSError(-reply.res, os.strerror(-reply.res))
    return reply


# ---------------------------------------------------------------------- sibling side


class SiblingApi(SocketApi):
    """A sibling worker's socket API: the ordinary one, served to the front worker, which
    also hears which of the sockets it accepted here have been forgotten (``RELEASED``).

    Replies and notices never block: what the front's socket cannot take now waits here
    (bounded by the front's :data:`MAX_IN_FLIGHT` and one notice per forgotten socket).
    """

    def __init__(self, stack: Stack, path: str) -> None:
        super().__init__(stack, path)
        self._handed: set[int] = set()
        self._released: list[int] = []
        self._out: dict[int, collections.deque[tuple[bytes, int]]] = {}

    def _op_accept(self, rec: SocketRecord | None, req: Message, fd: int) -> Any:
        result = super()._op_accept(rec, req, fd)
        if isinstance(result, tuple):
            self._handed.add(result[0].sid)
        return result

    def _op_connect(self, rec: SocketRecord | None, req: Message, fd: int) -> Any:
        result = super()._op_connect(rec, req, fd)
        if isinstance(rec, StreamSocket) and isinstance(result, Message) and result.res >= 0:
            self._handed.add(rec.sid)  # the front stands for it: tell it when it ends
        return result

    def forget(self, rec: SocketRecord) -> None:
        super().forget(rec)
        if rec.sid in self._handed:
            self._handed.discard(rec.sid)
            if not self._released:
                self.loop.call_soon(self._send_released)
            self._released.append(rec.sid)

    def _send_released(self) -> None:
        sids, self._released = self._released, []
        for i in range(0, len(sids), RELEASED_PER_MSG):
            part = sids[i : i + RELEASED_PER_MSG]
            raw = Message(Op.RELEASED, data=struct.pack(f"={len(part)}i", *part)).pack()
            for client in list(self._clients.values()):
                self._send(client, raw, -1)

    def _reply(self, client: _Client, result: Any) -> None:
        msg, fd = (result, -1) if isinstance(result, Message) else result
        self._send(client, msg.pack(), fd)

    def _send(self, client: _Client, raw: bytes, fd: int) -> None:
        """Send (or queue) one message; ``fd`` is ours and closed once sent."""
        key = client.sock.fileno()
        if key < 0:
            if fd >= 0:
                os.close(fd)
            return
        queue = self._out.get(key)
        if queue is not None:
            queue.append((raw, fd))
            return
        try:
            socket.send_fds(client.sock, [raw], [fd] if fd >= 0 else [])
        except BlockingIOError:
            self._out[key] = collections.deque([(raw, fd)])
            self.loop.add_writer(key, self._flush, client)
            return
        except OSError:
            if fd >= 0:
                os.close(fd)
            self._drop_client(client)
            return
        if fd >= 0:
            os.close(fd)

    def _flush(self, client: _Client) -> None:
        key = client.sock.fileno()
        queue = self._out.get(key)
        while queue:
            raw, fd = queue[0]
            try:
                socket.send_fds(client.sock, [raw], [fd] if fd >= 0 else [])
            except BlockingIOError:
                return
            except OSError:
                self._drop_client(client)
                return
            queue.popleft()
            if fd >= 0:
                os.close(fd)
        self._out.pop(key, None)
        self.loop.remove_writer(key)

    def _drop_client(self, client: _Client) -> None:
        key = client.sock.fileno()
        queue = self._out.pop(key, None)
        if queue is not None:
            self.loop.remove_writer(key)
            for _, fd in queue:
                if fd >= 0:
                    os.close(fd)
        super()._drop_client(client)


# ---------------------------------------------------------------------- front side


class SiblingLink:
    """The front worker's connection to one sibling's API: requests pipelined in order
    (the sibling answers in order), ``RELEASED`` notices, and reconnecting."""

    def __init__(self, owner: Siblings, index: int, path: str) -> None:
        self.owner = owner
        self.index = index
        self.path = path
        self.loop = owner.api.loop
        self.sock: socket.socket | None = None
        self._queued: collections.deque[tuple[bytes, int, asyncio.Future[Any]]] = (
            collections.deque()
        )
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._writing = False
        self.proxies: dict[int, RemoteStream] = {}
        self._early: collections.OrderedDict[int, None] = collections.OrderedDict()
        #: Listener and UDP mirrors made through this link (closed when it goes down).
        self.mirrors: set[_Mirror] = set()
        self._reconnect: asyncio.Task[None] | None = None
        self.connects = 0
        self.downs = 0

    @property
    def up(self) -> bool:
        return self.sock is not None

    # -- connection ----------------------------------------------------------------

    def try_connect(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.setblocking(False)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            return False
        self.sock = sock
        self.connects += 1
        self.loop.add_reader(sock.fileno(), self._readable)
        return True

    def start_reconnecting(self) -> None:
        if self._reconnect is None and not self.owner.closed:
            self._reconnect = self.loop.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        try:
            while not self.owner.closed and not self.try_connect():
                await asyncio.sleep(RECONNECT_EVERY)
        finally:
            self._reconnect = None
        if self.up:
            if self.connects > 1:
                log.warning("socket API of worker %d reached again: its listeners and UDP "
                            "ports are restored", self.index)  # fmt: skip
            await self.owner.replay(self)

    def down(self) -> None:
        """The sibling is gone (or spoke nonsense): its connections and mirrors end."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        self.downs += 1
        self.loop.remove_reader(sock.fileno())
        if self._writing:
            self.loop.remove_writer(sock.fileno())
            self._writing = False
        sock.close()
        gone = ConnectionResetError(errno.ECONNRESET, f"worker {self.index} is gone")
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(gone)
        while self._queued:
            _, fd, fut = self._queued.popleft()
            if fd >= 0:
                os.close(fd)
            if not fut.done():
                fut.set_exception(gone)
        for proxy in list(self.proxies.values()):
            proxy.release()
        self.proxies.clear()
        self._early.clear()
        for mirror in list(self.mirrors):
            mirror.close()
        if not self.owner.closed:
            log.warning("worker %d's socket API is gone: the program's connections there "
                        "ended; the other workers keep serving", self.index)  # fmt: skip
            self.start_reconnecting()

    def close(self) -> None:
        if self._reconnect is not None:
            self._reconnect.cancel()
        self.down()

    # -- requests ------------------------------------------------------------------

    def call(self, msg: Message, fd: int = -1) -> asyncio.Future[Any]:
        """Send ``msg`` (and ``fd``, which the link closes once sent); the future gives
        ``(reply, fd)`` (fd -1 if none; the caller owns it)."""
        fut: asyncio.Future[Any] = self.loop.create_future()
        if self.sock is None:
            if fd >= 0:
                os.close(fd)
            fut.set_exception(ConnectionResetError(errno.ECONNRESET, "worker is gone"))
            return fut
        self._queued.append((msg.pack(), fd, fut))
        self._send_queued()
        return fut

    async def forward(self, msg: Message) -> Message:
        reply, fd = await self.call(msg)
        if fd >= 0:
            os.close(fd)
        return reply

    def _send_queued(self) -> None:
        sock = self.sock
        while sock is not None and self._queued and len(self._waiting) < MAX_IN_FLIGHT:
            raw, fd, fut = self._queued[0]
            try:
                socket.send_fds(sock, [raw], [fd] if fd >= 0 else [])
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self.loop.add_writer(sock.fileno(), self._writable)
                return
            except OSError:
                self.down()
                return
            self._queued.popleft()
            if fd >= 0:
                os.close(fd)
            self._waiting.append(fut)
        if self._writing and sock is not None and not self._queued:
            self._writing = False
            self.loop.remove_writer(sock.fileno())

    def _writable(self) -> None:
        self._send_queued()

    def _readable(self) -> None:
        sock = self.sock
        for _ in range(MAX_IN_FLIGHT):
            if sock is None or self.sock is not sock:
                return
            try:
                raw, fds, _flags, _addr = socket.recv_fds(sock, MSG.size, 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                raw, fds = b"", []
            fd = fds[0] if fds else -1
            try:
                msg = Message.unpack(raw) if raw else None
            except ValueError:
                msg = None
            if msg is None or (msg.op != Op.RELEASED and not self._waiting):
                if fd >= 0:
                    os.close(fd)
                self.down()
                return
            if msg.op == Op.RELEASED:
                if fd >= 0:
                    os.close(fd)
                self._released(msg.data)
                continue
            fut = self._waiting.popleft()
            if fut.done():
                if fd >= 0:
                    os.close(fd)
            else:
                fut.set_result((msg, fd))
        self._send_queued()

    # -- the sockets it serves -----------------------------------------------------

    def _released(self, data: bytes) -> None:
        for (rsid,) in struct.iter_unpack("=i", data[: len(data) // 4 * 4]):
            proxy = self.proxies.pop(rsid, None)
            if proxy is not None:
                proxy.release()
            else:
                self._early[rsid] = None
                while len(self._early) > MAX_EARLY_RELEASED:
                    self._early.popitem(last=False)

    def adopt(self, proxy: RemoteStream) -> None:
        if proxy.rsid in self._early:  # the sibling forgot it already
            del self._early[proxy.rsid]
            proxy.release()
        elif self.up:
            self.proxies[proxy.rsid] = proxy
        else:
            proxy.release()


class _Mirror:
    """The front's end of a socket it made on a sibling for a program's socket."""

    def __init__(self, link: SiblingLink, rsid: int, sock: socket.socket) -> None:
        self.link = link
        self.rsid = rsid
        self.sock = sock
        self.closed = False
        sock.setblocking(False)
        link.mirrors.add(self)
        link.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """The sibling sees its program close the socket and ends it."""
        if self.closed:
            return
        self.closed = True
        self.link.mirrors.discard(self)
        self.link.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class ListenerMirror(_Mirror):
    """A program listener's twin on a sibling: one byte here per connection it accepted;
    each is taken with ACCEPT and queued on the program's listener."""

    def __init__(self, link: SiblingLink, rsid: int, sock: socket.socket, lst: Listener) -> None:
        super().__init__(link, rsid, sock)
        self.listener = lst
        lst.mirrors.append(self)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(MAX_IN_FLIGHT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()  # the sibling closed it (it died, or its listener failed)
            return
        for _ in data:
            self.link.call(Message(Op.ACCEPT, sid=self.rsid)).add_done_callback(self._accepted)

    def _accepted(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        reply, fd = fut.result()
        if fd < 0:
            return  # EAGAIN: that connection was reset while it waited
        conn = RemoteConn(self.link, reply.sid, fd, reply.data)
        if self.closed:
            conn.close()
            return
        self.link.owner.api.counters["sibling_accepts"] += 1
        self.listener.enqueue_remote(conn)

    def close(self) -> None:
        super().close()
        with contextlib.suppress(ValueError):
            self.listener.mirrors.remove(self)


class UdpMirror(_Mirror):
    """A program's UDP port on a sibling: its datagrams, written into the program's
    socket here as the front's own (a connected socket keeps only its peer's)."""

    def __init__(self, link: SiblingLink, rsid: int, sock: socket.socket, rec: DatagramSocket):
        super().__init__(link, rsid, sock)
        self.rec = rec

    def _readable(self) -> None:
        counters = self.link.owner.api.counters
        for _ in range(64):
            try:
                raw = self.sock.recv(65536 + UDP_HDR.size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                raw = b""
            if not raw:
                self.close()
                return
            rec = self.rec
            if rec.closed or len(raw) < UDP_HDR.size:
                continue
            if rec.peer is not None and unpack_udp_header(raw) != rec.peer:
                continue  # a connected UDP socket hears only its peer
            try:
                rec.sock.send(raw)
                counters["udp_from_siblings"] += 1
            except BlockingIOError:
                counters["udp_program_queue_full"] += 1
            except OSError:
                pass


class Siblings:
    """The front worker's view of its siblings: one :class:`SiblingLink` each, and the
    program's listeners and UDP ports, made again on a sibling that comes back."""

    def __init__(self, api: SocketApi, paths: dict[int, str]) -> None:
        self.api = api
        self.links = [SiblingLink(self, i, p) for i, p in sorted(paths.items())]
        self.listeners: set[Listener] = set()
        self.udp: dict[int, tuple[DatagramSocket, list[UdpMirror]]] = {}
        self.closed = False
        self._next_connect = 0

    def start(self) -> None:
        for link in self.links:
            if not link.try_connect():
                link.start_reconnecting()

    async def wait_ready(self, timeout: float, stop: asyncio.Event | None = None) -> bool:
        """Wait until every sibling's API is reached (True), ``timeout`` passes or
        ``stop`` is set (the worker is asked to end while it starts)."""
        deadline = time.monotonic() + timeout
        while not all(link.up for link in self.links):
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                return False
            await asyncio.sleep(0.02)
        return True

    def close(self) -> None:
        self.closed = True
        for link in self.links:
            link.close()

    def stats(self) -> dict[str, Any]:
        return {
            f"worker{link.index}": {
                "up": link.up,
                "connects": link.connects,
                "downs": link.downs,
                "connections": len(link.proxies),
                "mirrors": len(link.mirrors),
            }
            for link in self.links
        }

    # -- listeners -----------------------------------------------------------------

    async def mirror_listener(self, listener: Listener) -> None:
        """Listen on every sibling as ``listener`` does; OSError (EADDRINUSE ...) if a
        sibling refuses (the mirrors made are closed again). A sibling that is down
        gets it when it comes back."""
        self.listeners.add(listener)
        links = [link for link in self.links if link.up]
        results = await asyncio.gather(
            *(self._listen_on(link, listener) for link in links), return_exceptions=True
        )
        for r in results:
            if isinstance(r, ConnectionResetError):
                continue  # that sibling went down: it gets the listener when it is back
            if isinstance(r, BaseException):
                self.listeners.discard(listener)
                for mirror in list(listener.mirrors):
                    mirror.close()
                raise r

    async def _listen_on(self, link: SiblingLink, listener: Listener) -> None:
        rec = listener.rec
        assert rec.bound is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            first = link.call(
                Message(Op.SOCKET, a=(socket.SOCK_STREAM, 0, 0, rec.family)), theirs.detach()
            )
            reply, _ = await first
            rsid = _check(reply).res
            steps = [
                link.call(Message(Op.SETOPT, sid=rsid, a=(level, name, 0, 0), data=value))
                for (level, name), value in rec.options.items()
            ]
            steps.append(link.call(Message(Op.BIND, sid=rsid, data=pack_sockaddr(*rec.bound))))
            steps.append(link.call(Message(Op.LISTEN, sid=rsid, a=(listener.backlog, 0, 0, 0))))
            for step in steps:
                reply, fd = await step
                if fd >= 0:
                    os.close(fd)
                _check(reply)
        except BaseException:
            ours.close()
            raise
        if listener.closed or not link.up:
            ours.close()
            return
        ListenerMirror(link, rsid, ours, listener)

    # -- connect -------------------------------------------------------------------

    def pick_for_connect(self, bound: int, rport: int) -> SiblingLink | None:
        """Where the program's next TCP connect goes (None: the front). A socket bound to
        port ``bound`` goes to the worker the steering function gives that port and the
        peer's port ``rport`` (where the replies will arrive); the others to the front
        and the siblings that are up, in turn."""
        if bound:
            queue = steer_queue(bound, rport, len(self.links) + 1)
            return next((lk for lk in self.links if lk.index == queue and lk.up), None)
        up = [link for link in self.links if link.up]
        self._next_connect = (self._next_connect + 1) % (len(up) + 1)
        return up[self._next_connect - 1] if self._next_connect else None

    async def connect_on(self, link: SiblingLink, rec: StreamSocket, req: Message) -> Message:
        """The program's connect() through sibling ``link``: it gets a copy of the
        socket's anp end, its options and the CONNECT (it drains the handshake filler
        and pumps, as the front would); the record here becomes a forwarding one. If the
        sibling cannot take it, the front connects it itself."""
        api = self.api
        try:
            reply, _ = await link.call(
                Message(Op.SOCKET, a=(socket.SOCK_STREAM, 0, 0, rec.family)), os.dup(rec.fd)
            )
            rsid = _check(reply).res
            steps = [
                link.call(Message(Op.SETOPT, sid=rsid, a=(level, name, 0, 0), data=value))
                for (level, name), value in rec.options.items()
            ]
            if rec.bound is not None:  # the program chose the port (or bind(0) did)
                steps.append(link.call(Message(Op.BIND, sid=rsid, data=pack_sockaddr(*rec.bound))))
            connect = link.call(Message(Op.CONNECT, sid=rsid, a=req.a, data=req.data))
            for step in steps:
                reply, fd = await step
                if fd >= 0:
                    os.close(fd)
                _check(reply)
            reply, fd = await connect
            if fd >= 0:
                os.close(fd)
        except OSError as e:
            if rec.closed:
                return Message(req.op, res=-errno.EBADF)
            api.counters["connect_sibling_fallback"] += 1
            log.warning("worker %d cannot connect for the program (%s): connecting here",
                        link.index, e.strerror or e)  # fmt: skip
            return api.connect_here(rec, req)
        if reply.res < 0 or rec.closed:
            return Message(req.op, res=reply.res)
        rec.hand_over()
        proxy = RemoteStream(api, rec.sid, rec.family, link, rsid, rec.inode)
        api.replace(rec, proxy)
        link.adopt(proxy)
        api.counters["connects"] += 1
        api.counters[f"connects_worker{link.index}"] += 1
        return Message(req.op)

    # -- UDP -----------------------------------------------------------------------

    async def mirror_udp(self, rec: DatagramSocket) -> None:
        """``rec``'s port on every sibling too. A sibling that refuses is logged and
        counted: the program keeps the datagrams that reach the other workers."""
        self.udp[rec.sid] = (rec, self.udp.get(rec.sid, (rec, []))[1])
        await asyncio.gather(*(self._udp_on(link, rec) for link in self.links if link.up))

    async def _udp_on(self, link: SiblingLink, rec: DatagramSocket) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            reply, _ = await link.call(
                Message(Op.SOCKET, a=(socket.SOCK_DGRAM, 0, 0, rec.family)), theirs.detach()
            )
            rsid = _check(reply).res
            steps = [
                link.call(Message(Op.SETOPT, sid=rsid, a=(level, name, 0, 0), data=value))
                for (level, name), value in rec.options.items()
            ]
            steps.append(
                link.call(Message(Op.BIND, sid=rsid, data=pack_sockaddr(rec.bound_ip, rec.port)))
            )
            for step in steps:
                reply, fd = await step
                if fd >= 0:
                    os.close(fd)
                _check(reply)
        except OSError as e:
            ours.close()
            if not isinstance(e, ConnectionResetError):
                self.api.counters["udp_sibling_bind_failed"] += 1
                log.warning("worker %d cannot bind UDP port %d for the program: %s",
                            link.index, rec.port, e.strerror or e)  # fmt: skip
            return
        entry = self.udp.get(rec.sid)
        if rec.closed or entry is None or entry[0] is not rec or not link.up:
            ours.close()
            return
        entry[1][:] = [m for m in entry[1] if not m.closed]  # those of a worker that died
        entry[1].append(UdpMirror(link, rsid, ours, rec))

    def unmirror_udp(self, rec: DatagramSocket) -> None:
        entry = self.udp.get(rec.sid)
        if entry is not None and entry[0] is rec:
            del self.udp[rec.sid]
            for mirror in entry[1]:
                mirror.close()

    # -- a sibling back ------------------------------------------------------------

    async def replay(self, link: SiblingLink) -> None:
        """Listen and bind again on a sibling reached again (a restarted worker)."""
        for listener in list(self.listeners):
            if listener.closed:
                self.listeners.discard(listener)
                continue
            try:
                await self._listen_on(link, listener)
            except OSError as e:
                log.warning("worker %d cannot listen for the program: %s", link.index, e)
        for rec, _ in list(self.udp.values()):
            if not rec.closed:
                await self._udp_on(link, rec)


async def serve_worker_api(stack: Stack, api: str, index: int, queues: int,
                           stop: asyncio.Event | None = None,
                           timeout: float = 20.0) -> SocketApi:  # fmt: skip
    """The socket API of worker ``index`` of ``queues`` on a multi-queue host whose
    programs use the API at ``api``: worker 0 serves ``api`` and reaches its siblings
    (waiting up to ``timeout`` for them, or until ``stop`` is set; one reached later gets
    the program's listeners then); the others serve :func:`sibling_api_path`."""
    served: SocketApi
    if index == 0:
        paths = {j: sibling_api_path(api, j) for j in range(1, queues)}
        served = SocketApi(stack, api, paths)
        await served.start()
        sib = served.siblings
        if sib is not None and not await sib.wait_ready(timeout, stop) and not sib.closed:
            if stop is not None and stop.is_set():
                return served
            log.warning("not every worker's socket API answered within %.0f s; the front "
                        "keeps trying", timeout)  # fmt: skip
    else:
        served = SiblingApi(stack, sibling_api_path(api, index))
        await served.start()
    return served
