"""``anp echo-server`` / ``anp echo-client``: the reference application on the stack."""

from __future__ import annotations

import argparse
import asyncio
import json

from .base import CliError, Command, reason
from .options import open_stack_from_args, parse_host, parse_port, parse_size, positive_float
from .serving import ConnectionHandlers, control_server, ensure_no_stack_on


def _configure_echo_server(p: argparse.ArgumentParser) -> None:
    p.add_argument("port", type=parse_port, help="TCP port to serve on")
    p.add_argument("--socket", metavar="PATH", help="control socket (default /run/anp/TAP.sock)")


async def cmd_echo_server(args: argparse.Namespace) -> int:
    """``anp echo-server PORT``: checked TCP echo (the reference application) until SIGINT."""
    import functools

    from ..apps.echo import ServedEcho, echo_handler

    def report(e: ServedEcho) -> None:
        peer = f"{e.peer[0]}:{e.peer[1]}" if isinstance(e.peer, tuple) else str(e.peer)
        rate = e.size / e.seconds / 1e6 if e.seconds > 0 else 0.0
        status = "ok" if e.ok else f"FAILED: {e.error}"
        print(
            f"echo from {peer}: {e.size} bytes {status} in {e.seconds * 1000:.3f} ms "
            f"({rate:.1f} MB/s)",
            flush=True,
        )

    ensure_no_stack_on(args)
    handlers = ConnectionHandlers()
    async with open_stack_from_args(args) as stack, control_server(stack, args) as path:
        try:
            server = await stack.start_server(
                handlers.wrap(functools.partial(echo_handler, report=report)),
                stack.ip,
                args.port,
            )
        except OSError as e:
            raise CliError(f"cannot listen on TCP port {args.port}: {reason(e)}") from None
        try:
            print(
                f"anp echo-server: listening on {stack.ip}:{args.port} (tap {args.tap}, "
                f"mode {stack.mode_name}, control {path}); SIGINT/SIGTERM to stop",
                flush=True,
            )
            await asyncio.Event().wait()
        finally:
            server.close()
            await handlers.aclose()
    return 0


def _configure_echo_client(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", type=parse_host, help="server address")
    p.add_argument("port", type=parse_port, help="server TCP port")
    p.add_argument("--size", type=parse_size, default=1 << 20, help="bytes per echo (64K, 1M ...)")
    p.add_argument("--count", type=int, default=1, help="echoes, one connection each")
    p.add_argument("--timeout", type=positive_float, default=60.0, help="seconds allowed per echo")
    p.add_argument("--json", action="store_true", help="one JSON object per echo and a summary")


async def cmd_echo_client(args: argparse.Namespace) -> int:
    """``anp echo-client``: exit 0 only when every echo came back intact."""
    from ..apps.echo import EchoResult, echo_client

    if args.count < 1:
        raise CliError("--count must be at least 1")

    def report(r: EchoResult) -> None:
        if args.json:
            print(json.dumps({"echo": r.index, "bytes": r.size, "ok": r.ok, "error": r.error,
                              "seconds": r.seconds, "mb_per_s": r.mb_per_s}), flush=True)  # fmt: skip
            return
        status = "ok" if r.ok else f"FAILED: {r.error}"
        print(
            f"echo {r.index}/{args.count}: {r.size} bytes {status} in "
            f"{r.seconds * 1000:.3f} ms ({r.mb_per_s:.1f} MB/s)",
            flush=True,
        )

    async with open_stack_from_args(args) as stack:
        results = await echo_client(
            lambda: stack.open_connection(args.host, args.port),
            args.size,
            args.count,
            report=report,
            timeout=args.timeout,
        )
    good = sum(r.ok for r in results)
    total = sum(r.seconds for r in results)
    if args.json:
        print(json.dumps({"matched": good, "echoes": len(results), "bytes": args.size,
                          "seconds": total}))  # fmt: skip
    else:
        print(
            f"{good}/{len(results)} echoes matched, {args.size} bytes each, {total:.3f} s in total"
        )
    return 0 if good == len(results) else 1


SERVER_COMMAND = Command(
    "echo-server",
    "reference app: checked TCP echo server",
    _configure_echo_server,
    cmd_echo_server,
    stack_options=True,
    stop_status=0,
)

CLIENT_COMMAND = Command(
    "echo-client",
    "reference app: patterned-buffer echo client",
    _configure_echo_client,
    cmd_echo_client,
    stack_options=True,
)
