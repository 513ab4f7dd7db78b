"""``anp up``: run a stack on a TAP until SIGINT/SIGTERM, optionally serving echo and HTTP."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from ..preload.launch import api_socket_path
from ..preload.server import serve_socket_api
from .base import CliError, Command, reason
from .options import open_stack_from_args, parse_port
from .serving import ConnectionHandlers, control_server, ensure_no_stack_on

if TYPE_CHECKING:
    from ..stack import Stack


def _configure_up(p: argparse.ArgumentParser) -> None:
    p.add_argument("--echo", type=parse_port, metavar="PORT", help="serve UDP and TCP echo on PORT")
    p.add_argument(
        "--http", type=parse_port, metavar="PORT",
        help="serve the tiny HTTP responder (GET /pattern/N, POST /echo) on PORT",
    )  # fmt: skip
    p.add_argument("--socket", metavar="PATH", help="control socket (default /run/anp/TAP.sock)")
    p.add_argument(
        "--queues", type=int, default=1, metavar="N",
        help="multi-queue TAP with one stack worker process per queue (default 1)",
    )  # fmt: skip
    p.add_argument(
        "--pin-cpus", action="store_true",
        help="with --queues: pin worker i to CPU i (as queue i's interrupts go to CPU i)",
    )  # fmt: skip
    p.add_argument(
        "--no-restart", dest="restart", action="store_false",
        help="with --queues: do not restart a worker that dies; the supervisor answers its "
        "queue's flows with RST",
    )  # fmt: skip
    p.add_argument(
        "--metrics", type=parse_port, metavar="PORT",
        help="serve OpenMetrics/Prometheus text (GET /metrics) on the stack's address, PORT",
    )  # fmt: skip


async def _start_echo(
    stack: Stack, port: int, handlers: ConnectionHandlers
) -> tuple[Any, Any, str]:
    """UDP echo and TCP echo (RFC 862) on ``port``; returns (udp transport, tcp server, note)."""
    from ..apps.echo import UdpEchoProtocol, plain_echo_handler

    try:
        udp, _ = await stack.create_datagram_endpoint(UdpEchoProtocol, local_addr=(stack.ip, port))
    except OSError as e:
        raise CliError(f"cannot serve UDP echo on port {port}: {reason(e)}") from None
    try:
        tcp = await stack.start_server(handlers.wrap(plain_echo_handler), stack.ip, port)
    except (NotImplementedError, ImportError, AttributeError) as e:
        return udp, None, f"udp (tcp unavailable: {e})"
    except OSError as e:
        udp.close()
        raise CliError(f"cannot serve TCP echo on port {port}: {reason(e)}") from None
    return udp, tcp, "udp+tcp"


def _close_server(server: Any) -> None:
    if server is not None:
        server.close()


async def cmd_up(args: argparse.Namespace) -> int:
    """``anp up``: run a stack until SIGINT/SIGTERM."""
    if getattr(args, "queues", 1) != 1:
        if args.queues < 1:
            raise CliError(f"--queues {args.queues}: at least 1")
        from .up_queues import run_up

        return await run_up(args)
    ensure_no_stack_on(args)
    api_path = api_socket_path(args.tap)
    async with (
        open_stack_from_args(args) as stack,
        control_server(stack, args) as path,
        serve_socket_api(stack, api_path),
    ):
        udp = tcp = http = metrics = None
        echo = ""
        handlers = ConnectionHandlers()
        try:
            if args.echo is not None:
                udp, tcp, kinds = await _start_echo(stack, args.echo, handlers)
                echo = f", echo {kinds} port {args.echo}"
            if args.http is not None:
                from ..apps.http import http_handler

                try:
                    http = await stack.start_server(
                        handlers.wrap(http_handler), stack.ip, args.http
                    )
                except OSError as e:
                    raise CliError(f"cannot serve HTTP on port {args.http}: {reason(e)}") from None
                echo += f", http port {args.http}"
            if args.metrics is not None:
                from ..apps.metrics import metrics_handler

                try:
                    metrics = await stack.start_server(
                        handlers.wrap(metrics_handler(stack.stats)), stack.ip, args.metrics
                    )
                except OSError as e:
                    raise CliError(f"cannot serve metrics on port {args.metrics}: {e}") from None
                echo += f", metrics http://{stack.ip}:{args.metrics}/metrics"
            where = f" in netns {args.netns}" if args.netns else ""
            params = ",".join(f"{k}={v}" for k, v in stack.mode_params.items())
            print(
                f"anp up: tap {args.tap}{where}, stack {args.ip}"
                + (f" {args.ip6}" if getattr(args, "ip6", None) else "")
                + f" mac {stack.mac}, kernel side {args.peer}"
                + (f" {args.peer6}" if getattr(args, "peer6", None) else "")
                + f", mode {stack.mode_name}"
                f"{'(' + params + ')' if params else ''}{echo}, control {path}, "
                f"socket API {api_path} (anp run --attach --tap {args.tap}) "
                "(SIGINT/SIGTERM to stop)",
                flush=True,
            )
            await asyncio.Event().wait()
        finally:
            if udp is not None:
                udp.close()
            _close_server(tcp)
            _close_server(http)
            _close_server(metrics)
            await handlers.aclose()
    return 0


COMMAND = Command(
    "up",
    "run a stack on a TAP until SIGINT/SIGTERM",
    _configure_up,
    cmd_up,
    stack_options=True,
    stop_status=0,
)
