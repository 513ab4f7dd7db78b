"""anp-async: a userspace TCP/IP stack on asyncio.

The public face: :class:`Stack` and :class:`StackConfig`, the TCP options
(:class:`TcpConfig`), stream helpers that take a stack, and :func:`install` /
:func:`installed`, which make the running program's asyncio networking use a stack.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from .install import install, installed
from .proto.tcp.config import TcpConfig
from .stack import Stack, StackConfig
from .transport.server import Server


async def open_connection(
    stack: Stack, host: str, port: int, **kwds: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` on ``stack``."""
    return await stack.open_connection(host, port, **kwds)


async def start_server(
    stack: Stack,
    cb: Callable[..., Any],
    host: str | None = None,
    port: int = 0,
    **kwds: Any,
) -> Server:
    """``asyncio.start_server`` on ``stack``."""
    return await stack.start_server(cb, host, port, **kwds)


__all__ = [
    "Stack",
    "StackConfig",
    "TcpConfig",
    "install",
    "installed",
    "open_connection",
    "start_server",
]
__version__ = "0.1.0"
