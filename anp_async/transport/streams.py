"""asyncio streams over the stack: the standard StreamReader / StreamWriter, unchanged.

Like ``asyncio.open_connection`` / ``asyncio.start_server``, these build a
``StreamReaderProtocol`` around a stack transport, so programs get the very classes
they already use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .netstack import SocketStack as Stack
    from .server import Server

_DEFAULT_LIMIT = 2**16


async def open_connection(
    stack: Stack, host: str, port: int, *, limit: int = _DEFAULT_LIMIT, **kwds: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect on the stack; return the standard (StreamReader, StreamWriter) pair."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await stack.create_connection(lambda: protocol, host, port, **kwds)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


async def start_server(
    stack: Stack,
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    host: str | None = None,
    port: int = 0,
    *,
    limit: int = _DEFAULT_LIMIT,
    **kwds: Any,
) -> Server:
    """Serve on the stack; ``client_connected_cb(reader, writer)`` runs per connection."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await stack.create_server(factory, host, port, **kwds)
