"""A TCP server on the stack that behaves like asyncio's ``Server``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .sockobj import StackSocket

if TYPE_CHECKING:
    from ..proto.tcp.host import Listener
    from .tcp import TcpEndpoint, TcpLayer, TcpTransport


class Server(asyncio.AbstractServer):
    """Listening port plus the transports it accepted (asyncio.Server's contract).

    ``close()`` stops listening and leaves accepted connections open; ``wait_closed()``
    returns once the server is closed (Python 3.11 semantics); ``serve_forever()`` runs
    until cancelled; ``async with server`` closes it on exit.
    """

    def __init__(
        self,
        layer: TcpLayer,
        port: int,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        backlog: int,
        *,
        v4: bool = True,
        v6: bool = True,
        reuseport: bool = False,
        ssl: Any = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> None:
        self._layer = layer
        self._port = port
        self._factory = protocol_factory
        self._backlog = backlog
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        assert layer.stack.loop is not None
        self._loop = layer.stack.loop
        self._transports: set[TcpTransport] = set()
        self._serving = False
        self._closed = False
        self._serving_forever_fut: asyncio.Future[None] | None = None
        self._closed_waiters: list[asyncio.Future[None]] = []
        self._pending: list[TcpEndpoint] = []
        # Listen at once (the kernel's listen() does, before start_serving): handshakes
        # complete into a queue bounded by the backlog.
        self._listener: Listener | None = layer.listen(
            port, backlog, self._accept, v4=v4, v6=v6, reuseport=reuseport
        )
        self._sockets = [StackSocket(self, "tcp")]

    def __repr__(self) -> str:
        return f"<Server sockets={self.sockets!r}>"

    # Socket-like objects ask these.
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return (self._layer.stack.ip, self._port)
        return default

    @property
    def sockets(self) -> tuple[StackSocket, ...]:
        return () if self._closed else tuple(self._sockets)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving and not self._closed

    def _start_serving(self) -> None:
        if self._serving or self._closed:
            return
        self._serving = True
        pending, self._pending = self._pending, []
        for ep in pending:
            self._accept(ep)

    async def start_serving(self) -> None:
        self._start_serving()
        await asyncio.sleep(0)

    def _accept(self, ep: TcpEndpoint) -> None:
        """A handshake completed on our port: make the protocol and its transport."""
        if not self._serving:
            if len(self._pending) >= self._backlog:
                ep.abort()  # accept queue full
                return
            self._pending.append(ep)
            return
        from .tcp import TcpTransport

        protocol = self._factory()
        transport = TcpTransport(self._loop, ep, protocol, server=self)
        if self._ssl:
            from .tls import wrap_server

            wrap_server(
                self._loop,
                transport,
                protocol,
                self._ssl,
                self._ssl_handshake_timeout,
                self._ssl_shutdown_timeout,
            )
            return
        transport._start()

    def _attach(self, transport: TcpTransport) -> None:
        self._transports.add(transport)

    def _detach(self, transport: TcpTransport) -> None:
        self._transports.discard(transport)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._serving = False
        if self._listener is not None:
            self._layer.unlisten(self._listener)
            self._listener = None
        for ep in self._pending:
            ep.abort()
        self._pending.clear()
        fut = self._serving_forever_fut
        if fut is not None and not fut.done():
            fut.cancel()
        self._serving_forever_fut = None
        for w in self._closed_waiters:
            if not w.done():
                w.set_result(None)
        self._closed_waiters.clear()

    def close_clients(self) -> None:
        for tr in list(self._transports):
            tr.close()

    def abort_clients(self) -> None:
        for tr in list(self._transports):
            tr.abort()

    async def wait_closed(self) -> None:
        if self._closed:
            return
        waiter = self._loop.create_future()
        self._closed_waiters.append(waiter)
        await waiter

    async def serve_forever(self) -> None:
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()
