"""Event loops whose networking goes through the stack, so unmodified asyncio programs use it.

asyncio programs reach the network through a handful of loop methods: ``create_connection``,
``create_server``, ``create_datagram_endpoint``, ``getaddrinfo`` / ``getnameinfo``
(``asyncio.open_connection`` and ``asyncio.start_server`` call the first two). A *stack
loop* is asyncio's own loop (``asyncio.SelectorEventLoop``, or ``uvloop.Loop``) with those
methods answered by a :class:`~anp_async.stack.Stack` instead of kernel sockets; everything
else (timers, callbacks, subprocesses, files, signals) is the loop it always was. The
stack runs *on* that loop: its receive mode, timers and transports are callbacks there.

Where each call goes (the routing rule):

- an address on the stack's side -- anything that is not loopback -- goes to the stack;
- loopback (127.0.0.0/8, ::1, ``localhost``) goes to the kernel, with a warning: the stack
  has no loopback device, and a program talking to itself needs no network stack;
- Unix sockets (``create_unix_connection`` / ``create_unix_server``) stay with the kernel:
  they never touch a network;
- host names resolve from numeric addresses and ``/etc/hosts`` only; a name that needs DNS
  fails with ``socket.gaierror`` (the query would leave through the kernel's interfaces);
- an optional host map rewrites addresses first (``127.0.0.1 -> 10.0.0.1``), so programs
  with a hard-coded address can be pointed at the stack's network unchanged;
- TLS (``ssl=``) runs over the stack with asyncio's SSL layer (:mod:`.tls`).

``sock_*`` methods work on kernel sockets, which cannot reach the stack's network: they
stay with the kernel for Unix and loopback sockets and raise a clear NotImplementedError
otherwise, with one exception libraries rely on. aiohttp (through aiohappyeyeballs) makes a
kernel socket, ``await loop.sock_connect(sock, addr)`` and then
``loop.create_connection(sock=sock)``: here ``sock_connect`` to a stack address opens the
connection on the stack and parks it, and ``create_connection(sock=sock)`` adopts it.

The stack is obtained lazily, on a loop's first network call, from a *provider*
(``acquire(loop)`` / ``release(loop)``): ``anp run`` brings a TAP and a stack up then, and
tears them down when the loop closes; :func:`anp_async.install` hands over a running stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .resolve import HOSTS_FILE, resolve_ip_sync

if TYPE_CHECKING:
    from .netstack import SocketStack as Stack

log = logging.getLogger("anp_async.loop")

#: How long closing a loop waits for connections still delivering data or a FIN.
DRAIN_SECONDS = 2.0


#: Nesting depth of :func:`_plain_loops`: while above zero the policy makes plain loops.
_plain_depth = 0


@contextlib.contextmanager
def _plain_loops() -> Iterator[None]:
    """While the stack comes up or goes down, new loops are plain asyncio ones: anp's own
    helpers make loops then (pyroute2 runs a netlink loop in a worker thread), and those
    must neither route to the stack nor be uvloop (which has no netlink sockets)."""
    global _plain_depth
    _plain_depth += 1
    try:
        yield
    finally:
        _plain_depth -= 1


class StackUnavailableError(OSError):
    """The stack could not be brought up for a network call (bad options, no root ...)."""


class StackProvider(Protocol):
    """Where a stack loop gets its stack from, and gives it back when it closes."""

    async def acquire(self, loop: asyncio.AbstractEventLoop) -> Stack: ...

    async def release(self, loop: asyncio.AbstractEventLoop) -> None: ...


class FixedStackProvider:
    """A stack that is already running on the loop (``anp_async.install``); never closed here."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    async def acquire(self, loop: asyncio.AbstractEventLoop) -> Stack:
        if self.stack.loop is not loop:
            raise StackUnavailableError(
                errno.EINVAL, "anp: the stack runs on another event loop than this one"
            )
        return self.stack

    async def release(self, loop: asyncio.AbstractEventLoop) -> None:
        return None


# -- addresses -------------------------------------------------------------------------


def _host_str(host: Any) -> Any:
    return host.decode("idna") if isinstance(host, bytes) else host


def _reverse_hosts(ip: str, path: str = HOSTS_FILE) -> str | None:
    """The first /etc/hosts name for ``ip`` (getnameinfo without DNS)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and fields[0] == ip:
                    return fields[1]
    except OSError:
        return None
    return None


def _port_number(port: Any, kind: int) -> int:
    if port is None:
        return 0
    if isinstance(port, bytes):
        port = port.decode()
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        try:  # /etc/services, a local file: no network involved
            return socket.getservbyname(port, "udp" if kind == socket.SOCK_DGRAM else "tcp")
        except OSError:
            raise socket.gaierror(socket.EAI_SERVICE, f"unknown service {port!r}") from None
    raise TypeError(f"port must be an int or str, not {type(port).__name__}")


KERNEL = "kernel"
STACK = "stack"


class _Parked(asyncio.Protocol):
    """Holds a stack connection opened by ``sock_connect`` until ``create_connection(sock=)``."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.lost = False
        self.exc: BaseException | None = None
        self.finalizer: weakref.finalize | None = None

    def adopted(self) -> Any:
        """The transport, no longer parked (its socket's finalizer will not abort it)."""
        if self.finalizer is not None:
            self.finalizer.detach()
        return self.transport

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.pause_reading()  # data waits in the stack until the real protocol comes

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.exc = exc

    def eof_received(self) -> bool:
        return True


def _abort_parked(parked: _Parked) -> None:
    tr = parked.transport
    if tr is not None and not tr.is_closing():
        tr.abort()


# -- the loop --------------------------------------------------------------------------


if TYPE_CHECKING:
    # Type-check the mixin as what it is mixed into: an asyncio event loop.
    _LoopBase = asyncio.BaseEventLoop
else:
    _LoopBase = object


class StackLoopMixin(_LoopBase):
    """The networking methods of an event loop, answered by a stack.

    Mixed in front of a concrete loop class (``asyncio.SelectorEventLoop``,
    ``uvloop.Loop``); ``super()`` is the kernel. Call :meth:`_anp_setup` before use.
    """

    _anp_provider: StackProvider
    _anp_stack: Stack | None
    _anp_starting: asyncio.Future[Stack] | None
    _anp_host_map: dict[str, str]
    _anp_parked: weakref.WeakKeyDictionary[socket.socket, _Parked]
    _anp_warned: set[tuple[str, str]]

    def _anp_setup(self, provider: StackProvider, host_map: Mapping[str, str] | None) -> None:
        self._anp_provider = provider
        self._anp_stack = None
        self._anp_starting = None
        self._anp_host_map = {k.lower(): v for k, v in (host_map or {}).items()}
        self._anp_parked = weakref.WeakKeyDictionary()
        self._anp_warned = set()

    # ---------------------------------------------------------------- stack life

    @property
    def anp_stack(self) -> Stack | None:
        """The stack this loop routes to, once a network call has brought it up."""
        return self._anp_stack

    async def _anp_get_stack(self) -> Stack:
        stack = self._anp_stack
        if stack is not None:
            return stack
        fut = self._anp_starting
        if fut is None:
            # A task of its own: a caller being cancelled must not cancel the bring-up
            # that other callers wait for.
            fut = self._anp_starting = asyncio.ensure_future(self._anp_bring_up(), loop=self)
        return await asyncio.shield(fut)

    async def _anp_bring_up(self) -> Stack:
        try:
            with _plain_loops():
                stack = await self._anp_provider.acquire(self)
        except BaseException:
            self._anp_starting = None
            raise
        self._anp_stack = stack
        return stack

    async def _anp_release(self) -> None:
        starting = self._anp_starting
        if starting is not None and not starting.done():
            await asyncio.wait([starting])
        stack = self._anp_stack
        if stack is None:
            return
        # Let connections that still deliver data or a FIN finish (bounded), as the
        # kernel would after the process exits, before the stack goes away.
        deadline = self.time() + DRAIN_SECONDS
        while stack.tcp.busy() and self.time() < deadline:
            await asyncio.sleep(0.01)
        for parked in list(self._anp_parked.values()):
            _abort_parked(parked)
        self._anp_parked.clear()
        try:
            with _plain_loops():
                await self._anp_provider.release(self)
        finally:
            self._anp_stack = None
            self._anp_starting = None

    def close(self) -> None:
        """Release the stack (running the loop briefly to do it), then close the loop."""
        if (
            (self._anp_stack is not None or self._anp_starting is not None)
            and not self.is_running()
            and not self.is_closed()
        ):
            try:
                self.run_until_complete(self._anp_release())
            except Exception:
                log.exception("anp: releasing the stack failed")
        super().close()

    # ----------------------------------------------------------------- routing

    def _anp_map(self, host: str) -> str:
        return self._anp_host_map.get(host.lower(), host)

    def _anp_route(self, host: Any, *, passive: bool, what: str) -> tuple[str, str]:
        """(KERNEL or STACK, dotted address) for ``host``; gaierror for names that need DNS."""
        host = _host_str(host)
        if host is None or host == "":
            if passive:
                return STACK, "0.0.0.0"
            raise socket.gaierror(socket.EAI_NONAME, "anp: no host given")
        host = self._anp_map(str(host))
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            addr = ipaddress.ip_address(self._anp_map(resolve_ip_sync(host)))
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # ::ffff:a.b.c.d is the IPv4 address
        if addr.is_loopback:
            return self._anp_kernel(str(addr), what)
        return STACK, str(addr)

    def _anp_kernel(self, ip: str, what: str) -> tuple[str, str]:
        if (ip, what) not in self._anp_warned:
            self._anp_warned.add((ip, what))
            log.warning(
                "anp: %s is a loopback address and the stack has no loopback: "
                "this %s uses the kernel, not the stack",
                ip,
                what,
            )
        return KERNEL, ip

    def _anp_kernel_socket_ok(self, sock: Any, dest: Any = None) -> bool:
        """A kernel socket the kernel may keep: not IP (Unix, netlink ...), or loopback."""
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        addrs = [dest[0]] if dest is not None else []
        for getter in ("getpeername", "getsockname"):
            try:
                addrs.append(getattr(sock, getter)()[0])
            except OSError:
                continue
        for a in addrs:
            try:
                if ipaddress.ip_address(_host_str(a)).is_loopback:
                    return True
            except ValueError:
                continue
        return False

    def _anp_no_sock(self, sock: Any, what: str, dest: Any = None) -> None:
        if sock in self._anp_parked:
            raise NotImplementedError(
                f"anp: loop.{what} on a socket whose connection lives on the stack; "
                "pass it to loop.create_connection(sock=...) and use the transport"
            )
        if not self._anp_kernel_socket_ok(sock, dest):
            raise NotImplementedError(
                f"anp: loop.{what} works on kernel sockets, which cannot reach the stack's "
                "network; use transports or streams (create_connection, create_server, "
                "create_datagram_endpoint, open_connection, start_server)"
            )

    # ------------------------------------------------------------------ TCP

    # typeshed spells create_connection as two overloads (host/port or sock=), which one
    # implementation taking both forms cannot restate: the stub's shape, not ours.
    async def create_connection(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        *,
        ssl: Any = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: Any = None,
        local_addr: Any = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        **kw: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """TCP connection on the stack (kernel for loopback, or an unparked kernel ``sock``)."""
        kernel_kw = dict(
            ssl=ssl,
            family=family,
            proto=proto,
            flags=flags,
            sock=sock,
            local_addr=local_addr,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            **kw,
        )
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if (ssl_handshake_timeout is not None or ssl_shutdown_timeout is not None) and not ssl:
            raise ValueError("ssl_handshake_timeout / ssl_shutdown_timeout need ssl")
        if sock is not None:
            if host is not None or port is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            parked = self._anp_parked.pop(sock, None)
            if parked is not None:
                return await self._anp_adopt(
                    parked,
                    sock,
                    protocol_factory,
                    ssl,
                    server_hostname,
                    ssl_handshake_timeout,
                    ssl_shutdown_timeout,
                )
            self._anp_no_sock(sock, "create_connection(sock=...)")
            return await super().create_connection(protocol_factory, **kernel_kw)
        if host is None or port is None:
            raise ValueError("host and port was not specified and no sock specified")
        where, ip = self._anp_route(host, passive=False, what="connection")
        if where == KERNEL:
            return await super().create_connection(protocol_factory, host, port, **kernel_kw)
        stack = await self._anp_get_stack()
        if ssl and server_hostname is None:
            server_hostname = _host_str(host)
        return await stack.create_connection(
            protocol_factory,
            ip,
            _port_number(port, socket.SOCK_STREAM),
            local_addr=self._anp_local(local_addr),
            # asyncio turns Nagle off on every TCP socket it makes; so does the stack loop.
            nodelay=True,
            ssl=ssl,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    def _anp_local(self, local_addr: Any) -> tuple[str, int] | None:
        if local_addr is None:
            return None
        host, port = local_addr[0], local_addr[1]
        where, ip = self._anp_route(host, passive=True, what="local address")
        if where == KERNEL:
            raise OSError(errno.EADDRNOTAVAIL, f"anp: cannot bind a stack connection to {ip}")
        return (ip, _port_number(port, socket.SOCK_STREAM))

    async def _anp_adopt(
        self,
        parked: _Parked,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        ssl: Any,
        server_hostname: str | None,
        ssl_handshake_timeout: float | None,
        ssl_shutdown_timeout: float | None,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        # The kernel socket was only a handle for the stack connection: as with asyncio's
        # create_connection(sock=), it is ours now, and nothing needs it any more.
        tr = parked.adopted()
        sock.close()
        if parked.lost or tr is None or tr.is_closing():
            raise parked.exc or ConnectionResetError(
                errno.ECONNRESET, "anp: the connection was reset before it was used"
            )
        protocol = protocol_factory()
        if ssl:
            from .tls import wrap_client

            return await wrap_client(
                self,
                tr,
                protocol,
                ssl,
                server_hostname,
                ssl_handshake_timeout,
                ssl_shutdown_timeout,
            )
        tr.set_protocol(protocol)
        try:
            protocol.connection_made(tr)
        except BaseException:
            tr.abort()
            raise
        tr.resume_reading()
        return tr, protocol

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        *,
        family: int = socket.AF_UNSPEC,
        flags: int = socket.AI_PASSIVE,
        sock: Any = None,
        backlog: int = 100,
        ssl: Any = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
        **kw: Any,
    ) -> Any:
        """TCP server on the stack (kernel for loopback hosts or a kernel ``sock``)."""
        kernel_kw = dict(
            family=family,
            flags=flags,
            sock=sock,
            backlog=backlog,
            ssl=ssl,
            reuse_address=reuse_address,
            reuse_port=reuse_port,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            start_serving=start_serving,
            **kw,
        )
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        if (ssl_handshake_timeout is not None or ssl_shutdown_timeout is not None) and not ssl:
            raise ValueError("ssl_handshake_timeout / ssl_shutdown_timeout need ssl")
        if sock is not None:
            self._anp_no_sock(sock, "create_server(sock=...)")
            return await super().create_server(protocol_factory, **kernel_kw)
        hosts = list(host) if isinstance(host, (list, tuple, set)) else [host]
        routes = {self._anp_route(h, passive=True, what="server") for h in hosts or [None]}
        wheres = {w for w, _ in routes}
        if wheres == {KERNEL}:
            return await super().create_server(protocol_factory, host, port, **kernel_kw)
        if KERNEL in wheres:
            raise ValueError(
                "anp: one server on both loopback (kernel) and stack addresses is not "
                "supported; create two servers"
            )
        stack = await self._anp_get_stack()
        ips = {ip for _, ip in routes}
        # one stack listener per port takes both families
        ip = "0.0.0.0" if {"0.0.0.0", "::"} & ips or len(ips) > 1 else ips.pop()
        return await stack.create_server(
            protocol_factory,
            ip,
            _port_number(port, socket.SOCK_STREAM),
            backlog=backlog,
            ssl=ssl,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            start_serving=start_serving,
        )

    async def start_tls(
        self,
        transport: Any,
        protocol: asyncio.BaseProtocol,
        sslcontext: Any,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> Any:
        """Upgrade a stack connection to TLS (kernel transports go to the kernel)."""
        from .tcp import TcpTransport

        if isinstance(transport, TcpTransport):
            from .tls import start_tls

            return await start_tls(
                self,
                transport,
                protocol,
                sslcontext,
                server_side=server_side,
                server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
        return await super().start_tls(
            transport,
            protocol,
            sslcontext,
            server_side=server_side,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def sendfile(
        self,
        transport: Any,
        file: Any,
        offset: int = 0,
        count: int | None = None,
        *,
        fallback: bool = True,
    ) -> int:
        """Stack transports have no kernel socket to sendfile(2) on: read and write."""
        if getattr(transport, "_sendfile_compatible", None) is not None:
            return await super().sendfile(transport, file, offset, count, fallback=fallback)
        if not fallback:
            raise asyncio.SendfileNotAvailableError(
                "anp: stack transports have no kernel socket for os.sendfile()"
            )
        # asyncio's own fallback only needs run_in_executor, write and the protocol's
        # flow control, which stack transports (and TLS over them) all have.
        # (_sendfile_fallback is private to asyncio, so absent from the stubs.)
        return await asyncio.base_events.BaseEventLoop._sendfile_fallback(  # type: ignore[attr-defined]
            self, transport, file, offset, count
        )

    # ------------------------------------------------------------------ UDP

    # typeshed's signature (a generic protocol type, the keywords of one Python version)
    # cannot be restated by this one, which takes what asyncio takes at run time.
    async def create_datagram_endpoint(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        local_addr: Any = None,
        remote_addr: Any = None,
        *,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: Any = None,
        **kw: Any,
    ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        """UDP endpoint on the stack (kernel for Unix datagrams, loopback or a kernel ``sock``)."""
        kernel_kw = dict(family=family, proto=proto, flags=flags, sock=sock, **kw)
        if sock is not None:
            self._anp_no_sock(sock, "create_datagram_endpoint(sock=...)")
            return await super().create_datagram_endpoint(protocol_factory, **kernel_kw)
        if family not in (0, socket.AF_INET, socket.AF_INET6) or isinstance(local_addr, str):
            return await super().create_datagram_endpoint(
                protocol_factory, local_addr, remote_addr, **kernel_kw
            )
        routes = []
        if local_addr is not None:
            routes.append(self._anp_route(local_addr[0], passive=True, what="UDP endpoint"))
        if remote_addr is not None:
            routes.append(self._anp_route(remote_addr[0], passive=False, what="UDP endpoint"))
        wheres = {w for w, _ in routes}
        if wheres == {KERNEL}:
            return await super().create_datagram_endpoint(
                protocol_factory, local_addr, remote_addr, **kernel_kw
            )
        if KERNEL in wheres:
            raise ValueError("anp: a UDP endpoint between loopback and the stack is not possible")
        stack = await self._anp_get_stack()
        local = remote = None
        i = 0
        if local_addr is not None:
            local = (routes[i][1], _port_number(local_addr[1], socket.SOCK_DGRAM))
            i += 1
        if remote_addr is not None:
            remote = (routes[i][1], _port_number(remote_addr[1], socket.SOCK_DGRAM))
        return await stack.create_datagram_endpoint(
            protocol_factory,
            local_addr=local,
            remote_addr=remote,
            reuse_port=kw.get("reuse_port"),
            allow_broadcast=kw.get("allow_broadcast"),
        )

    # -------------------------------------------------------------- names

    async def getaddrinfo(
        self,
        host: Any,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:
        """Numeric addresses and /etc/hosts names only (the stack sends no DNS); results of
        family AF_INET6 (4-tuple addresses) for IPv6 addresses, AF_INET for IPv4."""
        if family not in (0, socket.AF_INET, socket.AF_INET6):
            raise socket.gaierror(socket.EAI_FAMILY, "anp: family must be AF_INET or AF_INET6")
        host = _host_str(host)
        if host is None:
            v6 = family == socket.AF_INET6
            if flags & socket.AI_PASSIVE:
                ip = "::" if v6 else "0.0.0.0"
            else:
                ip = "::1" if v6 else "127.0.0.1"
        else:
            host = self._anp_map(host)
            try:
                ip = str(ipaddress.ip_address(host.split("%", 1)[0]))
            except ValueError:
                ip = self._anp_map(resolve_ip_sync(host, family))
            else:
                want = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(socket.AddressFamily(family))
                if want is not None and ipaddress.ip_address(ip).version != want:
                    raise socket.gaierror(
                        socket.EAI_ADDRFAMILY, f"anp: {host!r} is not of the family asked for"
                    )
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        kinds = [
            (socket.SOCK_STREAM, socket.IPPROTO_TCP),
            (socket.SOCK_DGRAM, socket.IPPROTO_UDP),
            (socket.SOCK_RAW, 0),
        ]
        out = []
        canon = host if flags & socket.AI_CANONNAME and host else ""
        for t, p in kinds:
            if (type and t != type) or (proto and p != proto):
                continue
            sa: tuple[Any, ...] = (ip, _port_number(port, t))
            if fam == socket.AF_INET6:
                sa += (0, 0)
            out.append((fam, t, p, canon, sa))
        if not out:
            raise socket.gaierror(socket.EAI_SOCKTYPE, "anp: unsupported socket type")
        return out

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> tuple[str, str]:
        """Numeric answers, or /etc/hosts names; no DNS."""
        host, port = sockaddr[0], int(sockaddr[1])
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, f"anp: {host!r} is not an address") from None
        name = None if flags & socket.NI_NUMERICHOST else _reverse_hosts(host)
        if name is None:
            if flags & socket.NI_NAMEREQD:
                raise socket.gaierror(
                    socket.EAI_NONAME, f"anp: no /etc/hosts name for {host} (no DNS here)"
                )
            name = host
        serv = str(port)
        if not flags & socket.NI_NUMERICSERV:
            try:
                serv = socket.getservbyport(port, "udp" if flags & socket.NI_DGRAM else "tcp")
            except OSError:
                pass
        return name, serv

    # ------------------------------------------------------ kernel sockets

    async def sock_connect(self, sock: Any, address: Any) -> None:
        """To a stack address: open the connection on the stack and park it for
        ``create_connection(sock=sock)``; to loopback or a Unix path: the kernel."""
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return await super().sock_connect(sock, address)
        where, ip = self._anp_route(address[0], passive=False, what="connection")
        if where == KERNEL:
            return await super().sock_connect(sock, address)
        if sock.family != socket.AF_INET or sock.type != socket.SOCK_STREAM:
            raise NotImplementedError(
                "anp: loop.sock_connect() to the stack's network works for TCP sockets "
                "(then create_connection(sock=...)); use create_datagram_endpoint for UDP"
            )
        stack = await self._anp_get_stack()
        local = None
        try:
            bound = sock.getsockname()
        except OSError:
            bound = ("0.0.0.0", 0)
        if bound[1]:
            local = self._anp_local(bound)
        parked = _Parked()
        await stack.create_connection(
            lambda: parked,
            ip,
            _port_number(address[1], socket.SOCK_STREAM),
            local_addr=local,
            nodelay=True,
        )
        self._anp_parked[sock] = parked
        # A socket dropped without create_connection (a happy-eyeballs loser) must not
        # leave its stack connection open; adoption detaches this.
        parked.finalizer = weakref.finalize(sock, _abort_parked, parked)

    async def sock_recv(self, sock: Any, nbytes: int) -> bytes:
        self._anp_no_sock(sock, "sock_recv()")
        return await super().sock_recv(sock, nbytes)

    async def sock_recv_into(self, sock: Any, buf: Any) -> int:
        self._anp_no_sock(sock, "sock_recv_into()")
        return await super().sock_recv_into(sock, buf)

    async def sock_recvfrom(self, sock: Any, bufsize: int) -> Any:
        self._anp_no_sock(sock, "sock_recvfrom()")
        return await super().sock_recvfrom(sock, bufsize)

    async def sock_recvfrom_into(self, sock: Any, buf: Any, nbytes: int = 0) -> Any:
        self._anp_no_sock(sock, "sock_recvfrom_into()")
        return await super().sock_recvfrom_into(sock, buf, nbytes)

    async def sock_sendall(self, sock: Any, data: Any) -> None:
        self._anp_no_sock(sock, "sock_sendall()")
        return await super().sock_sendall(sock, data)

    async def sock_sendto(self, sock: Any, data: Any, address: Any) -> int:
        self._anp_no_sock(sock, "sock_sendto()", dest=address)
        return await super().sock_sendto(sock, data, address)

    async def sock_accept(self, sock: Any) -> Any:
        self._anp_no_sock(sock, "sock_accept()")
        return await super().sock_accept(sock)

    async def sock_sendfile(self, sock: Any, file: Any, *args: Any, **kw: Any) -> int:
        self._anp_no_sock(sock, "sock_sendfile()")
        return await super().sock_sendfile(sock, file, *args, **kw)

    async def connect_accepted_socket(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], sock: Any, **kw: Any
    ) -> Any:
        self._anp_no_sock(sock, "connect_accepted_socket()")
        return await super().connect_accepted_socket(protocol_factory, sock, **kw)


class StackSelectorEventLoop(StackLoopMixin, asyncio.SelectorEventLoop):
    """asyncio's default loop with its networking on a stack."""

    def __init__(self, provider: StackProvider, host_map: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._anp_setup(provider, host_map)


_uvloop_class: type | None = None


def stack_uvloop_class() -> type:
    """``uvloop.Loop`` with its networking on a stack (uvloop's Python-level methods can be
    overridden in a subclass; its C internals never call them, and need not)."""
    global _uvloop_class
    if _uvloop_class is None:
        import uvloop

        # uvloop's stubs disagree with asyncio's on a dozen loop methods.
        class StackUVLoop(StackLoopMixin, uvloop.Loop):  # type: ignore[misc]
            """uvloop with its networking on a stack."""

            def __init__(
                self, provider: StackProvider, host_map: Mapping[str, str] | None = None
            ) -> None:
                super().__init__()
                self._anp_setup(provider, host_map)

        _uvloop_class = StackUVLoop
    return _uvloop_class


def new_stack_loop(
    provider: StackProvider, kind: str = "asyncio", host_map: Mapping[str, str] | None = None
) -> asyncio.AbstractEventLoop:
    """A new stack loop of ``kind`` (``asyncio`` or ``uvloop``)."""
    if kind == "uvloop":
        return stack_uvloop_class()(provider, host_map)
    if kind != "asyncio":
        raise ValueError(f"unknown loop kind {kind!r} (asyncio or uvloop)")
    return StackSelectorEventLoop(provider, host_map)


class StackEventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """A policy whose new loops are stack loops: ``asyncio.run``, ``asyncio.new_event_loop``
    and ``get_event_loop`` all make them, so a program needs no change."""

    def __init__(
        self,
        provider: StackProvider,
        kind: str = "asyncio",
        host_map: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.provider = provider
        self.kind = kind
        self.host_map = dict(host_map or {})
        self.loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        if _plain_depth:
            return super().new_event_loop()
        loop = new_stack_loop(self.provider, self.kind, self.host_map)
        self.loops.add(loop)
        return loop

    def close_loops(self) -> None:
        """Close loops the program left open that still hold a stack (releases it)."""
        for loop in list(self.loops):
            if isinstance(loop, StackLoopMixin) and loop.anp_stack is not None:
                if not loop.is_closed() and not loop.is_running():
                    loop.close()


def parse_host_map(items: list[str] | None) -> dict[str, str]:
    """``["127.0.0.1=10.0.0.1", "localhost=10.0.0.1"]`` -> mapping (ValueError if malformed)."""
    out: dict[str, str] = {}
    for item in items or []:
        src, sep, dst = item.partition("=")
        src, dst = src.strip(), dst.strip()
        if not sep or not src or not dst:
            raise ValueError(f"{item!r} is not FROM=TO (e.g. 127.0.0.1=10.0.0.1)")
        try:
            ipaddress.IPv4Address(dst)
        except ValueError:
            raise ValueError(f"{item!r}: TO must be an IPv4 address") from None
        out[src.lower()] = dst
    return out


__all__ = [
    "DRAIN_SECONDS",
    "FixedStackProvider",
    "StackEventLoopPolicy",
    "StackLoopMixin",
    "StackProvider",
    "StackSelectorEventLoop",
    "StackUnavailableError",
    "new_stack_loop",
    "parse_host_map",
    "stack_uvloop_class",
]
