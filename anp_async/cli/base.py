"""What every ``anp`` command shares: the user-facing error, the command registry, and
signal handling (SIGINT/SIGTERM cancel the running command; :func:`consume_stop` lets a
command finish its output after a signal)."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


class CliError(Exception):
    """A user-facing error: printed as one sentence, exit status 2."""


# -- the command registry ------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One ``anp`` subcommand.

    ``run`` takes the parsed arguments and returns the exit status (it may be a coroutine
    function: it then runs on the loop chosen by ``--loop``, with SIGINT/SIGTERM cancelling
    it). ``stop_status`` is the exit status when a signal stopped it (None: 128 + signal).
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Awaitable[int] | int]
    stack_options: bool = False
    stop_status: int | None = None


_COMMANDS: dict[str, Command] = {}


def register_command(cmd: Command) -> Command:
    """Add a subcommand to ``anp`` (a later registration with the same name replaces it)."""
    _COMMANDS[cmd.name] = cmd
    return cmd


def commands() -> list[Command]:
    """The registered commands, in registration order."""
    return list(_COMMANDS.values())


def reason(e: BaseException) -> str:
    """One readable clause for an OSError (its own message without the ``[Errno n]``)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


# -- signals -------------------------------------------------------------------------------

_stop_signal: int | None = None


def consume_stop() -> bool:
    """In a command: swallow the cancellation a signal caused; False if it was not a signal."""
    if _stop_signal is None:
        return False
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return True


async def run_async(cmd: Command, args: argparse.Namespace) -> int:
    """Run a coroutine command with SIGINT/SIGTERM cancelling it (exit 128 + signal)."""
    global _stop_signal
    _stop_signal = None
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(signum: int) -> None:
        global _stop_signal
        if _stop_signal is None:  # later signals must not interrupt the cleanup
            _stop_signal = signum
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        result = cmd.run(args)
        return int(await result) if inspect.isawaitable(result) else result
    except asyncio.CancelledError:
        if _stop_signal is None:
            raise
        task.uncancel()
        return cmd.stop_status if cmd.stop_status is not None else 128 + _stop_signal
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
