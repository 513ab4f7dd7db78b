"""The ``anp`` command: bring a stack up on a TAP, ping from it, talk to it, demo it.

Commands (``anp COMMAND --help`` for each)::

    anp up [--echo PORT] [--http PORT] run a stack until SIGINT/SIGTERM
    anp ctl --tap TAP mode [NAME]     show or switch the receive mode of a running stack
    anp ctl --tap TAP coalesce ...    ethtool -C style coalescing change
    anp ctl --tap TAP stats [--json]  counters of a running stack
    anp ping HOST [-c N]              ICMP echo from the stack, printed like ping(8)
    anp echo-server PORT              the reference application's checked TCP echo server
    anp echo-client HOST PORT ...     its client: patterned buffers, checked echoes
    anp demo                          kernel arping/ping against the stack in every mode

Every command that runs a stack takes the same options (:func:`add_stack_options`) and
opens the stack with :func:`open_stack_from_args`. Other modules add commands with
:func:`register_command` (list the module in :data:`EXTRA_COMMAND_MODULES`).

Errors a user can cause (no permission, namespace exists, no stack on the TAP, address in
use) print one sentence to stderr and exit with status 2; anything else is a bug and
shows its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import ipaddress
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import control

if TYPE_CHECKING:
    from .stack import Stack

MODES = ("interrupt", "coalesce", "poll", "adaptive")

#: Which receive mode each mode knob belongs to (a knob alone selects its mode).
_KNOB_MODE = {
    "rx_frames": "coalesce",
    "rx_usecs": "coalesce",
    "budget": "poll",
    "weight": "adaptive",
    "busy_poll_usecs": "adaptive",
}

#: Modules that register extra commands when imported (e.g. the benchmark's ``anp bench``).
EXTRA_COMMAND_MODULES: tuple[str, ...] = ("bench.cli", "anp_async.runner")


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


# -- shared stack options ------------------------------------------------------------------


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return v


def parse_size(text: str) -> int:
    """``4096``, ``64K``, ``1M``, ``64MiB``, ``1G`` -> bytes (K/M/G are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 4096, 64K, 1M, 64MiB)")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def add_stack_options(p: argparse.ArgumentParser) -> None:
    """The options every stack-running command shares (TAP, addresses, mode, pcap, loop)."""
    g = p.add_argument_group("stack")
    g.add_argument("--tap", default="anptap0", help="TAP device name (default %(default)s)")
    g.add_argument("--ip", default="10.0.0.2/24", help="stack address/prefix (%(default)s)")
    g.add_argument(
        "--peer", default="10.0.0.1/24", help="kernel-side TAP address/prefix (%(default)s)"
    )
    g.add_argument(
        "--netns",
        metavar="NAME",
        help="create network namespace NAME, put the TAP in it, remove it on exit",
    )
    g.add_argument("--mac", help="stack MAC address (default: random, locally administered)")
    g.add_argument("--gateway", help="default gateway address")
    g.add_argument("--mtu", type=int, help="MTU (default 1500)")
    g.add_argument("--pcap", metavar="FILE", help="record every frame into FILE (pcap)")
    g.add_argument(
        "--no-offload",
        dest="offload",
        action="store_false",
        help="open the TAP without the virtio-net header: no checksum offload, no TSO/GSO",
    )
    g.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop")
    g.add_argument(
        "--congestion",
        choices=("newreno", "cubic"),
        default="newreno",
        help="TCP congestion control of the stack's connections (default newreno)",
    )
    m = p.add_argument_group("receive mode")
    m.add_argument(
        "--mode",
        choices=MODES,
        help="receive mode (default interrupt, or the mode the knobs below belong to)",
    )
    m.add_argument("--rx-frames", type=_positive_int, help="coalesce: frames per batch")
    m.add_argument("--rx-usecs", type=_positive_int, help="coalesce: max wait (us)")
    m.add_argument("--budget", type=_positive_int, help="poll: frames per poll round")
    m.add_argument("--weight", type=_positive_int, help="adaptive: NAPI weight")
    m.add_argument("--busy-poll-usecs", type=_positive_int, help="adaptive: busy-poll window (us)")


def mode_from_args(args: argparse.Namespace) -> tuple[str, dict[str, int]]:
    """The receive mode and its parameters from ``--mode`` and the knobs.

    Without ``--mode`` the knobs pick the mode (``--rx-usecs 50`` means coalesce); knobs of
    two different modes, or of a mode other than ``--mode``, are an error.
    """
    params = {k: getattr(args, k) for k in _KNOB_MODE if getattr(args, k, None) is not None}
    implied = {_KNOB_MODE[k] for k in params}
    mode = getattr(args, "mode", None)
    if mode is None:
        if len(implied) > 1:
            raise CliError(
                "options of different receive modes given ("
                + ", ".join("--" + k.replace("_", "-") for k in sorted(params))
                + "); choose one mode with --mode"
            )
        mode = implied.pop() if implied else "interrupt"
    else:
        wrong = sorted(k for k in params if _KNOB_MODE[k] != mode)
        if wrong:
            raise CliError(_not_for_mode(wrong, f"--mode {mode}"))
    from .modes import make_mode

    try:
        make_mode(mode, **params)  # validate values now, before anything is created
    except ValueError as e:
        raise CliError(str(e)) from None
    return mode, params


def _not_for_mode(knobs: list[str], mode: str) -> str:
    opts = ", ".join("--" + k.replace("_", "-") for k in knobs)
    return f"{opts} {'does' if len(knobs) == 1 else 'do'} not apply to {mode}"


def _check_interface(text: str, what: str) -> str:
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise CliError(f"{what} {text!r} is not an IPv4 address/prefix like 10.0.0.2/24") from None
    if "/" not in text:
        text = f"{iface.ip}/24"
    return text


def _check_stack_args(args: argparse.Namespace) -> None:
    if not args.tap or len(args.tap.encode()) > 15 or "/" in args.tap or args.tap in (".", ".."):
        raise CliError(f"--tap {args.tap!r} is not a valid interface name (1-15 bytes, no '/')")
    args.ip = _check_interface(args.ip, "--ip")
    if args.peer:
        args.peer = _check_interface(args.peer, "--peer")
        if args.peer.split("/")[0] == args.ip.split("/")[0]:
            raise CliError(f"--ip and --peer are the same address {args.ip.split('/')[0]}")
    if args.gateway:
        try:
            ipaddress.IPv4Address(args.gateway)
        except ValueError:
            raise CliError(f"--gateway {args.gateway!r} is not an IPv4 address") from None
    if args.mtu is not None and not 68 <= args.mtu <= 65535:
        raise CliError(f"--mtu {args.mtu} is outside 68..65535")
    if args.mac and not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", args.mac):
        raise CliError(f"--mac {args.mac!r} is not a MAC address like 02:00:00:00:00:02")


@contextlib.asynccontextmanager
async def open_stack_from_args(args: argparse.Namespace) -> AsyncIterator[Stack]:
    """Create the namespace (``--netns``), the TAP and the stack; remove them all on exit.

    Cleanup runs on normal exit, on errors and on cancellation (``anp`` turns SIGINT and
    SIGTERM into cancellation of the main task). Raises :class:`CliError` for the errors a
    user can fix.
    """
    _check_stack_args(args)
    mode, params = mode_from_args(args)
    from .nic.netns import Netns
    from .nic.tap import TapNic
    from .proto.tcp.config import TcpConfig
    from .stack import Stack, StackConfig

    ns = None
    nic = None
    try:
        if args.netns:
            try:
                ns = Netns.create(args.netns)
            except FileExistsError:
                raise CliError(f"network namespace {args.netns} already exists") from None
            except PermissionError:
                raise CliError("creating a network namespace needs root") from None
            except OSError as e:
                raise CliError(f"cannot create network namespace {args.netns}: {e}") from None
        try:
            # In a worker thread: pyroute2's blocking API refuses to run inside a running
            # event loop, and setns() then moves only that thread into the namespace.
            nic = await asyncio.to_thread(
                TapNic.open,
                args.tap,
                peer=args.peer,
                netns=ns,
                mtu=args.mtu or 1500,
                vnet_hdr=getattr(args, "offload", True),
            )
        except PermissionError:
            raise CliError(
                f"no permission to create TAP {args.tap}: run as root (CAP_NET_ADMIN)"
            ) from None
        except OSError as e:
            raise CliError(f"cannot create TAP {args.tap}: {_reason(e)}") from None
        cfg = StackConfig(
            nic=nic,
            ip=args.ip,
            mac=args.mac,
            gateway=args.gateway,
            mtu=args.mtu,
            mode=mode,
            mode_params=params,
            pcap=args.pcap,
            tcp=TcpConfig(congestion=getattr(args, "congestion", "newreno")),
        )
        try:
            stack = Stack(cfg)
        except OSError as e:
            raise CliError(f"cannot start the stack: {_reason(e)}") from None
        async with stack:
            yield stack
    finally:
        if nic is not None:
            nic.close()  # idempotent; the stack closes it too
        if ns is not None:
            ns.delete()


def _reason(e: BaseException) -> str:
    """One readable clause for an OSError (its own message without the ``[Errno n]``)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


# -- signals -------------------------------------------------------------------------------

_stop_signal: int | None = None


def stop_signal() -> int | None:
    """The signal (SIGINT/SIGTERM) that asked the running command to stop, if any."""
    return _stop_signal


def _consume_stop() -> bool:
    """In a command: swallow the cancellation a signal caused; False if it was not a signal."""
    if _stop_signal is None:
        return False
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return True


async def _run_async(cmd: Command, args: argparse.Namespace) -> int:
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
        return await cmd.run(args)  # type: ignore[misc]
    except asyncio.CancelledError:
        if _stop_signal is None:
            raise
        task.uncancel()
        return cmd.stop_status if cmd.stop_status is not None else 128 + _stop_signal
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise CliError("--loop uvloop needs the uvloop package (pip install uvloop)") from None
        return uvloop.new_event_loop
    return None


# -- anp up --------------------------------------------------------------------------------


def _control_path(args: argparse.Namespace) -> str:
    return args.socket or control.socket_path(args.tap)


def _configure_up(p: argparse.ArgumentParser) -> None:
    p.add_argument("--echo", type=int, metavar="PORT", help="serve UDP and TCP echo on PORT")
    p.add_argument(
        "--http", type=int, metavar="PORT",
        help="serve the tiny HTTP responder (GET /pattern/N, POST /echo) on PORT",
    )  # fmt: skip
    p.add_argument("--socket", metavar="PATH", help="control socket (default /run/anp/TAP.sock)")


@contextlib.asynccontextmanager
async def _control_server(stack: Stack, args: argparse.Namespace) -> AsyncIterator[str]:
    path = _control_path(args)
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


def _ensure_no_stack_on(args: argparse.Namespace) -> None:
    """Refuse early (before touching any device) when another stack serves this TAP."""
    path = _control_path(args)
    if control.serving(path):
        raise CliError(f"a stack already runs on TAP {args.tap} (control socket {path})")


async def _start_echo(
    stack: Stack, port: int, handlers: ConnectionHandlers
) -> tuple[Any, Any, str]:
    """UDP echo and TCP echo (RFC 862) on ``port``; returns (udp transport, tcp server, note)."""
    from .apps.echo import UdpEchoProtocol, plain_echo_handler

    try:
        udp, _ = await stack.create_datagram_endpoint(UdpEchoProtocol, local_addr=(stack.ip, port))
    except OSError as e:
        raise CliError(f"cannot serve UDP echo on port {port}: {_reason(e)}") from None
    try:
        tcp = await stack.start_server(handlers.wrap(plain_echo_handler), stack.ip, port)
    except (NotImplementedError, ImportError, AttributeError) as e:
        return udp, None, f"udp (tcp unavailable: {e})"
    except OSError as e:
        udp.close()
        raise CliError(f"cannot serve TCP echo on port {port}: {_reason(e)}") from None
    return udp, tcp, "udp+tcp"


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


def _close_server(server: Any) -> None:
    if server is not None:
        server.close()


async def cmd_up(args: argparse.Namespace) -> int:
    """``anp up``: run a stack until SIGINT/SIGTERM."""
    _ensure_no_stack_on(args)
    async with open_stack_from_args(args) as stack, _control_server(stack, args) as path:
        udp = tcp = http = None
        echo = ""
        handlers = ConnectionHandlers()
        try:
            if args.echo is not None:
                udp, tcp, kinds = await _start_echo(stack, args.echo, handlers)
                echo = f", echo {kinds} port {args.echo}"
            if args.http is not None:
                from .apps.http import http_handler

                try:
                    http = await stack.start_server(
                        handlers.wrap(http_handler), stack.ip, args.http
                    )
                except OSError as e:
                    raise CliError(f"cannot serve HTTP on port {args.http}: {_reason(e)}") from None
                echo += f", http port {args.http}"
            where = f" in netns {args.netns}" if args.netns else ""
            params = ",".join(f"{k}={v}" for k, v in stack.mode_params.items())
            print(
                f"anp up: tap {args.tap}{where}, stack {args.ip} mac {stack.mac}, "
                f"kernel side {args.peer}, mode {stack.mode_name}"
                f"{'(' + params + ')' if params else ''}{echo}, control {path} "
                "(SIGINT/SIGTERM to stop)",
                flush=True,
            )
            await asyncio.Event().wait()
        finally:
            if udp is not None:
                udp.close()
            _close_server(tcp)
            _close_server(http)
            await handlers.aclose()
    return 0


# -- anp ctl -------------------------------------------------------------------------------


def _configure_ctl(p: argparse.ArgumentParser) -> None:
    def common(q: argparse.ArgumentParser, top: bool) -> None:
        kw: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
        q.add_argument("--tap", help="TAP of the running stack (default anptap0)", **kw)
        q.add_argument("--socket", metavar="PATH", help="control socket path", **kw)

    common(p, True)
    sub = p.add_subparsers(dest="ctl_cmd", metavar="{mode,coalesce,stats,info}", required=True)
    m = sub.add_parser("mode", help="show the receive mode, or switch it")
    common(m, False)
    m.add_argument("mode", nargs="?", choices=MODES, help="switch to this mode")
    for opt, hlp in (
        ("--rx-frames", "coalesce: frames per batch"),
        ("--rx-usecs", "coalesce: max wait (us)"),
        ("--budget", "poll: frames per round"),
        ("--weight", "adaptive: NAPI weight"),
        ("--busy-poll-usecs", "adaptive: busy-poll window (us)"),
    ):
        m.add_argument(opt, type=_positive_int, help=hlp)
    c = sub.add_parser(
        "coalesce", help="switch to coalesce mode with these parameters (ethtool -C)"
    )
    common(c, False)
    c.add_argument("--rx-frames", type=_positive_int, help="frames per batch")
    c.add_argument("--rx-usecs", type=_positive_int, help="max wait for a batch (us)")
    s = sub.add_parser("stats", help="print the stack's counters")
    common(s, False)
    s.add_argument("--json", action="store_true", help="print the raw JSON")
    i = sub.add_parser("info", help="what runs on this TAP (pid, addresses, mode)")
    common(i, False)


def _ctl_call(args: argparse.Namespace, req: dict[str, Any]) -> dict[str, Any]:
    tap = args.tap or "anptap0"
    path = args.socket or control.socket_path(tap)
    try:
        resp = control.call(path, req)
    except control.NoStackError:
        raise CliError(f"no stack runs on TAP {tap} (no control socket at {path})") from None
    except PermissionError:
        raise CliError(f"no permission to use the control socket {path}") from None
    except TimeoutError as e:
        raise CliError(str(e)) from None
    if not resp.get("ok"):
        raise CliError(f"the stack refused: {resp.get('error', 'no reason given')}")
    return resp


def _fmt_mode(resp: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in (resp.get("params") or {}).items())
    return f"mode {resp['mode']}" + (f" ({params})" if params else "")


def cmd_ctl(args: argparse.Namespace) -> int:
    """``anp ctl``: talk to a running stack through its control socket."""
    if args.ctl_cmd == "mode":
        knobs = {k: getattr(args, k) for k in _KNOB_MODE if getattr(args, k) is not None}
        if args.mode is None:
            if knobs:
                raise CliError("give the mode to switch to, e.g. `anp ctl mode poll --budget 32`")
            print(_fmt_mode(_ctl_call(args, {"cmd": "mode"})))
            return 0
        wrong = sorted(k for k in knobs if _KNOB_MODE[k] != args.mode)
        if wrong:
            raise CliError(_not_for_mode(wrong, f"mode {args.mode}"))
        resp = _ctl_call(args, {"cmd": "set_mode", "mode": args.mode, "params": knobs})
        print(_fmt_mode(resp))
        return 0
    if args.ctl_cmd == "coalesce":
        knobs = {
            k: getattr(args, k) for k in ("rx_frames", "rx_usecs") if getattr(args, k) is not None
        }
        print(_fmt_mode(_ctl_call(args, {"cmd": "coalesce", "params": knobs})))
        return 0
    if args.ctl_cmd == "stats":
        stats = _ctl_call(args, {"cmd": "stats"})["stats"]
        if args.json:
            print(json.dumps(stats, indent=2, sort_keys=False))
        else:
            print_stats(stats)
        return 0
    if args.ctl_cmd == "info":
        info = _ctl_call(args, {"cmd": "info"})["info"]
        for k, v in info.items():
            print(f"{k}: {v}")
        return 0
    raise CliError(f"unknown ctl command {args.ctl_cmd}")


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.extend(_flatten(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out.append((prefix + k, v))
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6f}".rstrip("0").rstrip(".") if v else "0"
    return str(v)


def print_stats(stats: dict[str, Any], console: Any = None) -> None:
    """Render ``stack.stats()`` as rich tables: NIC, mode, per-layer counters, TCP sockets."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    mode = dict(stats.get("mode") or {})
    params = mode.pop("params", {}) or {}
    name = mode.pop("name", "?")
    totals = mode.pop("totals_all_modes", {}) or {}
    if "address" in stats:
        console.print(f"stack {stats.get('address')}  mac {stats.get('mac', '?')}")

    nic = Table(title="NIC", title_justify="left")
    nic.add_column("counter")
    nic.add_column("value", justify="right")
    for k, v in _flatten(stats.get("nic") or {}):
        nic.add_row(k, _fmt_value(v))
    console.print(nic)

    pdesc = ", ".join(f"{k}={v}" for k, v in params.items())
    mt = Table(
        title=f"receive mode: {name}" + (f" ({pdesc})" if pdesc else ""), title_justify="left"
    )
    mt.add_column("counter")
    mt.add_column("this mode", justify="right")
    mt.add_column("all modes", justify="right")
    for k, v in _flatten(mode):
        mt.add_row(k, _fmt_value(v), _fmt_value(totals.get(k, v)))
    console.print(mt)

    lt = Table(title="protocol counters", title_justify="left")
    lt.add_column("layer")
    lt.add_column("counter")
    lt.add_column("value", justify="right")
    for layer in ("eth", "arp", "ip", "icmp", "udp", "tcp"):
        rows = _flatten(stats.get(layer) or {})
        for i, (k, v) in enumerate(rows):
            lt.add_row(layer if i == 0 else "", k, _fmt_value(v))
        if rows:
            lt.add_section()
    console.print(lt)

    conns = (stats.get("tcp") or {}).get("connections") or []
    if conns:
        cols: list[str] = []
        for c in conns:
            for k in c:
                if k not in cols:
                    cols.append(k)
        ct = Table(title=f"TCP connections ({len(conns)})", title_justify="left")
        for col in cols:
            ct.add_column(
                col, justify="right" if isinstance(conns[0].get(col), int | float) else "left"
            )
        for c in conns:
            ct.add_row(*(_fmt_value(c.get(col, "")) for col in cols))
        console.print(ct)
    else:
        console.print("TCP connections: none")


# -- anp ping ------------------------------------------------------------------------------


def _configure_ping(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", help="address to ping from the stack (e.g. the kernel side 10.0.0.1)")
    p.add_argument("-c", "--count", type=int, default=5, help="echo requests (default 5)")
    p.add_argument("-i", "--interval", type=float, default=1.0, help="seconds between requests")
    p.add_argument("-s", "--size", type=int, default=56, help="ICMP payload bytes (default 56)")
    p.add_argument("-W", "--timeout", type=float, default=1.0, help="seconds to wait per reply")


def ping_summary(host: str, sent: int, rtts: list[float], elapsed: float) -> list[str]:
    """The closing lines of ping(8) for ``sent`` requests and the RTTs (seconds) received."""
    recv = len(rtts)
    loss = 100.0 * (sent - recv) / sent if sent else 0.0
    lines = [
        f"--- {host} ping statistics ---",
        f"{sent} packets transmitted, {recv} received, {loss:g}% packet loss, "
        f"time {elapsed * 1000:.0f}ms",
    ]
    if rtts:
        ms = [r * 1000 for r in rtts]
        avg = sum(ms) / len(ms)
        mdev = math.sqrt(max(0.0, sum(x * x for x in ms) / len(ms) - avg * avg))
        lines.append(f"rtt min/avg/max/mdev = {min(ms):.3f}/{avg:.3f}/{max(ms):.3f}/{mdev:.3f} ms")
    return lines


async def cmd_ping(args: argparse.Namespace) -> int:
    """``anp ping``: exit 0 when every request was answered, 1 otherwise (like ping -c)."""
    if args.count < 1 or args.interval < 0 or args.timeout <= 0 or not 0 <= args.size <= 65000:
        raise CliError("-c must be >= 1, -i >= 0, -W > 0 and -s within 0..65000")
    async with open_stack_from_args(args) as stack:
        print(f"PING {args.host} ({args.host}) {args.size}({args.size + 28}) bytes of data.")
        rtts: list[float] = []
        sent = 0
        t_start = time.perf_counter()
        try:
            for seq in range(1, args.count + 1):
                t0 = time.perf_counter()
                sent += 1
                try:
                    rtt = await stack.ping(args.host, timeout=args.timeout, size=args.size)
                except TimeoutError:
                    print(f"no answer yet for icmp_seq={seq}", flush=True)
                except OSError as e:
                    if e.errno != errno.EHOSTUNREACH:
                        raise CliError(f"ping {args.host}: {_reason(e)}") from None
                    print(
                        f"From {stack.ip} icmp_seq={seq} Destination Host Unreachable", flush=True
                    )
                else:
                    rtts.append(rtt)
                    print(
                        f"{args.size + 8} bytes from {args.host}: icmp_seq={seq} "
                        f"time={rtt * 1000:.3f} ms",
                        flush=True,
                    )
                if seq < args.count:
                    await asyncio.sleep(max(0.0, args.interval - (time.perf_counter() - t0)))
        except asyncio.CancelledError:
            if not _consume_stop():
                raise
        print()
        for line in ping_summary(args.host, sent, rtts, time.perf_counter() - t_start):
            print(line)
    return 0 if sent and len(rtts) == sent else 1


# -- anp echo-server / echo-client ---------------------------------------------------------


def _configure_echo_server(p: argparse.ArgumentParser) -> None:
    p.add_argument("port", type=int, help="TCP port to serve on")
    p.add_argument("--socket", metavar="PATH", help="control socket (default /run/anp/TAP.sock)")


async def cmd_echo_server(args: argparse.Namespace) -> int:
    """``anp echo-server PORT``: checked TCP echo (the reference application) until SIGINT."""
    import functools

    from .apps.echo import ServedEcho, echo_handler

    def report(e: ServedEcho) -> None:
        peer = f"{e.peer[0]}:{e.peer[1]}" if isinstance(e.peer, tuple) else str(e.peer)
        rate = e.size / e.seconds / 1e6 if e.seconds > 0 else 0.0
        status = "ok" if e.ok else f"FAILED: {e.error}"
        print(
            f"echo from {peer}: {e.size} bytes {status} in {e.seconds * 1000:.3f} ms "
            f"({rate:.1f} MB/s)",
            flush=True,
        )

    _ensure_no_stack_on(args)
    handlers = ConnectionHandlers()
    async with open_stack_from_args(args) as stack, _control_server(stack, args) as path:
        try:
            server = await stack.start_server(
                handlers.wrap(functools.partial(echo_handler, report=report)),
                stack.ip,
                args.port,
            )
        except OSError as e:
            raise CliError(f"cannot listen on TCP port {args.port}: {_reason(e)}") from None
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
    p.add_argument("host", help="server address")
    p.add_argument("port", type=int, help="server TCP port")
    p.add_argument("--size", type=parse_size, default=1 << 20, help="bytes per echo (64K, 1M ...)")
    p.add_argument("--count", type=int, default=1, help="echoes, one connection each")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per echo")


async def cmd_echo_client(args: argparse.Namespace) -> int:
    """``anp echo-client``: exit 0 only when every echo came back intact."""
    from .apps.echo import EchoResult, echo_client

    if args.count < 1:
        raise CliError("--count must be at least 1")

    def report(r: EchoResult) -> None:
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
    print(f"{good}/{len(results)} echoes matched, {args.size} bytes each, {total:.3f} s in total")
    return 0 if good == len(results) else 1


# -- anp demo ------------------------------------------------------------------------------


def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wire", action="store_true", help="two stacks on the in-memory wire (no root needed)"
    )
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop")


async def cmd_demo(args: argparse.Namespace) -> int:
    """``anp demo``: the kernel's arping and ping against the stack in every mode."""
    from .demo import run_demo

    return await run_demo(use_kernel=False if args.wire else None)


# -- registration and main -----------------------------------------------------------------

register_command(
    Command(
        "up",
        "run a stack on a TAP until SIGINT/SIGTERM",
        _configure_up,
        cmd_up,
        stack_options=True,
        stop_status=0,
    )
)
register_command(
    Command("ctl", "talk to a running stack (mode, coalesce, stats)", _configure_ctl, cmd_ctl)
)


def _configure_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tap", help="TAP of the running stack (default anptap0)")
    p.add_argument("--socket", metavar="PATH", help="control socket path")
    p.add_argument("--json", action="store_true", help="print the raw JSON")


def cmd_stats(args: argparse.Namespace) -> int:
    """``anp stats``: short for ``anp ctl stats`` (the name DESIGN.md gives it)."""
    args.ctl_cmd = "stats"
    return cmd_ctl(args)


register_command(
    Command(
        "stats", "print a running stack's counters (= anp ctl stats)", _configure_stats, cmd_stats
    )
)
register_command(
    Command(
        "ping",
        "ping a host from the stack, like ping(8)",
        _configure_ping,
        cmd_ping,
        stack_options=True,
    )
)
register_command(
    Command(
        "echo-server",
        "reference app: checked TCP echo server",
        _configure_echo_server,
        cmd_echo_server,
        stack_options=True,
        stop_status=0,
    )
)
register_command(
    Command(
        "echo-client",
        "reference app: patterned-buffer echo client",
        _configure_echo_client,
        cmd_echo_client,
        stack_options=True,
    )
)
register_command(
    Command("demo", "kernel arping/ping against the stack in every mode", _configure_demo, cmd_demo)
)


def build_parser() -> argparse.ArgumentParser:
    """The ``anp`` argument parser with every registered command."""
    for mod in EXTRA_COMMAND_MODULES:
        importlib.import_module(mod)
    parser = argparse.ArgumentParser(
        prog="anp", description="anp-async: a userspace TCP/IP stack on asyncio"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        if cmd.stack_options:
            add_stack_options(p)
        p.set_defaults(_command=cmd)
    return parser


def _error(msg: str) -> int:
    msg = msg.rstrip(".")
    print(f"anp: error: {msg}.", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``anp`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cmd: Command = args._command
    try:
        if asyncio.iscoroutinefunction(cmd.run):
            factory = _loop_factory(getattr(args, "loop", "asyncio"))
            with asyncio.Runner(loop_factory=factory) as runner:
                return runner.run(_run_async(cmd, args))
        return int(cmd.run(args))  # type: ignore[arg-type]
    except CliError as e:
        return _error(str(e))
    except KeyboardInterrupt:
        return 130
    except PermissionError as e:
        return _error(f"permission denied: {_reason(e)}")
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:
        if e.errno in (
            errno.EADDRINUSE,
            errno.EBUSY,
            errno.EEXIST,
            errno.ENODEV,
            errno.EHOSTUNREACH,
            errno.EACCES,
            errno.EPERM,
            errno.ENOENT,
        ):
            return _error(_reason(e))
        raise


if __name__ == "__main__":
    raise SystemExit(main())
