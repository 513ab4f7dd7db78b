"""Socket-like objects for ``get_extra_info('socket')`` and ``Server.sockets``.

asyncio hands out a ``TransportSocket`` wrapper; libraries call ``family``, ``type``,
``getsockname()``, ``getpeername()`` and ``setsockopt(TCP_NODELAY / SO_KEEPALIVE ...)`` on
it. There is no kernel socket behind a stack transport, so this object answers those calls
from the transport and maps the options that mean something onto the stack's TCP.
"""

from __future__ import annotations

import socket
import weakref
from typing import Any

from .sockopts import check_option, option_default


class StackSocket:
    """What ``transport.get_extra_info('socket')`` returns for a stack transport.

    Options set on it live in the owner's ``_sockopts`` when it has one (a transport
    hands out its socket through a :class:`SocketHolder`), else in the socket itself."""

    def __init__(self, owner: Any, kind: str) -> None:
        self._owner = owner
        self._kind = kind
        opts = getattr(owner, "_sockopts", None)
        self._opts: dict[tuple[int, int], int] = opts if opts is not None else {}

    def __repr__(self) -> str:
        return f"<StackSocket {self._kind} {self.getsockname()}>"

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET

    @property
    def type(self) -> socket.SocketKind:
        return socket.SOCK_STREAM if self._kind == "tcp" else socket.SOCK_DGRAM

    @property
    def proto(self) -> int:
        return socket.IPPROTO_TCP if self._kind == "tcp" else socket.IPPROTO_UDP

    def fileno(self) -> int:
        return -1  # no kernel socket: like a detached socket

    def getsockname(self) -> tuple[str, int]:
        return self._owner.get_extra_info("sockname")

    def getpeername(self) -> tuple[str, int]:
        peer = self._owner.get_extra_info("peername")
        if peer is None:
            raise OSError(107, "Transport endpoint is not connected")
        return peer

    def setsockopt(self, level: int, optname: int, value: int | bytes, *_: Any) -> None:
        """As ``socket.setsockopt``, with Linux's rules (``transport/sockopts.py``):
        OSError(EINVAL) for a value out of range, a flag kept as 0 or 1."""
        ival = int.from_bytes(value, "little") if isinstance(value, bytes) else int(value)
        ival = check_option(self._kind == "tcp", level, optname, ival)
        self._opts[(level, optname)] = ival
        apply = getattr(self._owner, "_apply_sockopt", None)
        if apply is not None:
            apply(level, optname, ival)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        """As ``socket.getsockopt``: an int, or bytes (at most ``buflen``) for a structured
        option such as TCP_INFO or TCP_CONGESTION."""
        if (level, optname) == (socket.SOL_SOCKET, socket.SO_TYPE):
            return int(self.type)
        if (level, optname) == (socket.SOL_SOCKET, socket.SO_ERROR):
            return 0
        getter = getattr(self._owner, "_get_sockopt", None)
        if getter is not None:
            v = getter(level, optname, buflen)
            if v is not None:
                return v[:buflen] if isinstance(v, bytes) and buflen is not None else v
        return self._opts.get((level, optname), option_default(level, optname))

    def setblocking(self, flag: bool) -> None:
        pass

    def gettimeout(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


class SocketHolder:
    """A transport's link to its :class:`StackSocket`: the same object while anyone holds
    it, made again when not. Only a weak reference: a strong one would tie transport and
    socket into a reference cycle, and a closed connection's state (its buffers, the
    frames they view) would wait for the cyclic garbage collector instead of going with
    its last reference, as an asyncio transport's does. Options set on the socket stay
    with the owner (``owner._sockopts``)."""

    __slots__ = ("_kind", "_ref")

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._ref: weakref.ref[StackSocket] | None = None

    def get(self, owner: Any) -> StackSocket:
        sock = self._ref() if self._ref is not None else None
        if sock is None:
            sock = StackSocket(owner, self._kind)
            self._ref = weakref.ref(sock)
        return sock
