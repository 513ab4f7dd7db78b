"""What the serving commands (``anp up``, ``anp echo-server``) share: the control socket
that ``anp ctl`` talks to, and clean shutdown of the connection handlers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from .. import control
from .base import CliError

if TYPE_CHECKING:
    from ..stack import Stack


def control_path(args: argparse.Namespace) -> str:
    """The control socket path: ``--socket``, or the default for ``--tap``."""
    return args.socket or control.socket_path(args.tap)


@contextlib.asynccontextmanager
async def control_server(stack: Stack, args: argparse.Namespace) -> AsyncIterator[str]:
    """Serve the control socket for ``stack`` while the block runs; yields its path."""
    path = control_path(args)
    info = {"tap": args.tap, "netns": args.netns, "peer": args.peer, "prefix": args.ip}
    server = control.ControlServer(stack, path, info)
    try:
        await server.start()
    except FileExistsError:
        raise CliError(f"a stack already runs on TAP {args.tap} (control socket {path})") from None
    try:
        yield path
    finally:
        await server.close()


def ensure_no_stack_on(args: argparse.Namespace) -> None:
    """Refuse early (before touching any device) when another stack serves this TAP."""
    path = control_path(args)
    if control.serving(path):
        raise CliError(f"a stack already runs on TAP {args.tap} (control socket {path})")


class ConnectionHandlers:
    """Runs stream handlers for a server and ends them cleanly on shutdown.

    ``wrap(handler)`` gives the callback to pass to ``start_server``. ``aclose()`` aborts
    the connections still open and waits (bounded) for their handlers to return, so no
    handler task is left for the loop to cancel at exit (Python 3.11's stream code logs a
    spurious "Exception in callback" for a handler task that ends cancelled).
    """

    def __init__(self) -> None:
        self._open: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    def wrap(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._open[task] = writer
            try:
                await handler(reader, writer)
            except asyncio.CancelledError:
                pass  # shutdown: the connection is being torn down anyway
            finally:
                self._open.pop(task, None)

        return run

    async def aclose(self, timeout: float = 1.0) -> None:
        for writer in list(self._open.values()):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        if self._open:
            await asyncio.wait(list(self._open), timeout=timeout)
        for task in list(self._open):
            task.cancel()
        if self._open:
            await asyncio.wait(list(self._open), timeout=timeout)
