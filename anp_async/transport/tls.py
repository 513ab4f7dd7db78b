"""TLS over the stack's TCP transports, with asyncio's own SSL protocol layer.

asyncio does TLS without touching sockets: ``asyncio.sslproto.SSLProtocol`` sits between a
plain transport and the application's protocol, runs the handshake through memory BIOs,
and hands the application a transport of its own. The stack's :class:`TcpTransport` is a
plain transport like any other, so TLS on the stack is that same layer put on top of it:

    TcpTransport  <->  SSLProtocol  <->  _SSLProtocolTransport  <->  application protocol

As in asyncio, the application's ``connection_made`` runs only after the handshake has
completed; ``create_connection`` returns once it has (or raises its error).

The transports handed in here have usually not been started (``_start()`` tells the
protocol it is connected, so it must wait until the SSL layer is the protocol). A
transport that has already been started -- a connection adopted from ``sock_connect``, or
an upgrade through ``loop.start_tls`` -- gets the SSL layer's ``connection_made`` called
directly instead.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
from asyncio import sslproto
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tcp import TcpTransport

log = logging.getLogger(__name__)


def _context(ssl: Any) -> _ssl.SSLContext | None:
    """``ssl=True`` means asyncio's default context (SSLProtocol builds it when given None)."""
    if isinstance(ssl, bool):
        return None
    if not isinstance(ssl, _ssl.SSLContext):
        raise TypeError(f"ssl must be an SSLContext or True, not {type(ssl).__name__}")
    return ssl


def _attach(transport: TcpTransport, ssl_protocol: sslproto.SSLProtocol) -> None:
    """Make the SSL layer the transport's protocol and tell it the connection is up."""
    transport.set_protocol(ssl_protocol)
    if transport._started:
        ssl_protocol.connection_made(transport)
        transport.resume_reading()
    else:
        transport._start()


async def wrap_client(
    loop: asyncio.AbstractEventLoop,
    transport: TcpTransport,
    protocol: asyncio.BaseProtocol,
    ssl: Any,
    server_hostname: str | None,
    ssl_handshake_timeout: float | None,
    ssl_shutdown_timeout: float | None,
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    """Client side of ``create_connection(ssl=...)``: handshake, then the app's transport."""
    if server_hostname is None:
        transport.abort()
        raise ValueError("You must set server_hostname when using ssl without a host")
    waiter: asyncio.Future[None] = loop.create_future()
    ssl_protocol = sslproto.SSLProtocol(
        loop,
        protocol,
        _context(ssl),  # type: ignore[arg-type]  # stub: None is allowed (default context)
        waiter,
        server_side=False,
        server_hostname=server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,  # type: ignore[arg-type]  # stub: int
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    _attach(transport, ssl_protocol)
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    return ssl_protocol._app_transport, protocol


def _consume_handshake_result(waiter: asyncio.Future[None]) -> None:
    # Nobody awaits a server-side handshake: fetch its error so asyncio does not log
    # "exception was never retrieved"; SSLProtocol already closed the connection.
    if not waiter.cancelled() and waiter.exception() is not None:
        log.debug("TLS handshake with a client failed: %s", waiter.exception())


def wrap_server(
    loop: asyncio.AbstractEventLoop,
    transport: TcpTransport,
    protocol: asyncio.BaseProtocol,
    ssl: Any,
    ssl_handshake_timeout: float | None,
    ssl_shutdown_timeout: float | None,
) -> None:
    """Server side: put the SSL layer on an accepted connection and start the handshake."""
    if not isinstance(ssl, _ssl.SSLContext):
        transport.abort()
        raise TypeError("a TLS server needs an SSLContext with its certificate (ssl=context)")
    waiter: asyncio.Future[None] = loop.create_future()
    waiter.add_done_callback(_consume_handshake_result)
    ssl_protocol = sslproto.SSLProtocol(
        loop,
        protocol,
        ssl,
        waiter,
        server_side=True,
        ssl_handshake_timeout=ssl_handshake_timeout,  # type: ignore[arg-type]  # stub: int
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    _attach(transport, ssl_protocol)


async def start_tls(
    loop: asyncio.AbstractEventLoop,
    transport: TcpTransport,
    protocol: asyncio.BaseProtocol,
    sslcontext: _ssl.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> asyncio.Transport:
    """``loop.start_tls`` for a stack transport: upgrade a running connection to TLS.

    Same sequence as asyncio's: stop reading, make the SSL layer the protocol, then (on the
    next loop pass) start the handshake and read again; the application's protocol is
    already connected, so its ``connection_made`` is not called a second time.
    """
    if not isinstance(sslcontext, _ssl.SSLContext):
        raise TypeError(
            f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
        )
    waiter: asyncio.Future[None] = loop.create_future()
    ssl_protocol = sslproto.SSLProtocol(
        loop,
        protocol,
        sslcontext,
        waiter,
        server_side,
        server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,  # type: ignore[arg-type]  # stub: int
        ssl_shutdown_timeout=ssl_shutdown_timeout,
        call_connection_made=False,
    )
    transport.pause_reading()
    transport.set_protocol(ssl_protocol)
    made = loop.call_soon(ssl_protocol.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        made.cancel()
        resumed.cancel()
        raise
    return ssl_protocol._app_transport
