"""The options every stack-running command shares (``--tap``, ``--ip``, ``--mode`` ...),
their validation, and :func:`open_stack_from_args`, which turns them into a running stack."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .base import CliError, reason

if TYPE_CHECKING:
    from ..proto.tcp.config import TcpConfig
    from ..stack import Stack

MODES = ("interrupt", "coalesce", "poll", "adaptive")

#: Which receive mode each mode knob belongs to (a knob alone selects its mode).
KNOB_MODE = {
    "rx_frames": "coalesce",
    "rx_usecs": "coalesce",
    "budget": "poll",
    "weight": "adaptive",
    "busy_poll_usecs": "adaptive",
}


def positive_int(text: str) -> int:
    """argparse type: a non-negative integer."""
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


def parse_port(text: str) -> int:
    """A TCP/UDP port, 1..65535 (argparse type)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1..65535")
    return port


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def parse_host(text: str) -> str:
    """An IPv4 or IPv6 address, or a host name made of valid labels (argparse type)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or not all(_LABEL.fullmatch(x) for x in labels) or labels[-1].isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address or host name")
    return text


def positive_float(text: str) -> float:
    """A number of seconds > 0 (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return v


class _FamilyAddress(argparse.Action):
    """``--ip``/``--peer`` given once per family: an IPv6 value (it has a ':') goes to
    ``ip6``/``peer6``, an IPv4 one replaces the IPv4 default."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, opt: Any = None
    ) -> None:
        setattr(ns, self.dest + "6" if ":" in str(value) else self.dest, value)


def add_stack_options(p: argparse.ArgumentParser) -> None:
    """The options every stack-running command shares (TAP, addresses, mode, pcap, loop)."""
    g = p.add_argument_group("stack")
    g.add_argument("--tap", default="anptap0", help="TAP device name (default %(default)s)")
    g.add_argument(
        "--ip", default="10.0.0.2/24", action=_FamilyAddress,
        help="stack address/prefix (%(default)s); give it again with an IPv6 address "
        "(--ip fd00::2/64) for a dual-stack stack",
    )  # fmt: skip
    g.add_argument(
        "--peer", default="10.0.0.1/24", action=_FamilyAddress,
        help="kernel-side TAP address/prefix (%(default)s); again for IPv6 (--peer fd00::1/64)",
    )  # fmt: skip
    p.set_defaults(ip6=None, peer6=None)
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
        "--trace", nargs="?", const="", metavar="EXPR",
        help="print every decision the stack takes on each frame to stderr, optionally only "
        "for frames matching EXPR (as anp trace --filter)",
    )  # fmt: skip
    g.add_argument(
        "--congestion",
        choices=("newreno", "cubic"),
        default="newreno",
        help="TCP congestion control of the stack's connections (default newreno)",
    )
    g.add_argument(
        "--recovery",
        choices=("rack", "sack", "newreno"),
        default="rack",
        help="TCP loss recovery: rack = SACK + RACK-TLP (RFC 8985, default, as Linux), "
        "sack = RFC 6675 DupThresh only, newreno = no SACK (RFC 6582)",
    )
    g.add_argument(
        "--ecn",
        choices=("off", "on"),
        default="off",
        help="ECN (RFC 3168): on = ask for it on the stack's SYNs (off by default, as on "
        "Linux clients; a peer's request is always accepted)",
    )
    m = p.add_argument_group("receive mode")
    m.add_argument(
        "--mode",
        choices=MODES,
        help="receive mode (default interrupt, or the mode the knobs below belong to)",
    )
    m.add_argument("--rx-frames", type=positive_int, help="coalesce: frames per batch")
    m.add_argument("--rx-usecs", type=positive_int, help="coalesce: max wait (us)")
    m.add_argument("--budget", type=positive_int, help="poll: frames per poll round")
    m.add_argument("--weight", type=positive_int, help="adaptive: NAPI weight")
    m.add_argument("--busy-poll-usecs", type=positive_int, help="adaptive: busy-poll window (us)")


def mode_from_args(args: argparse.Namespace) -> tuple[str, dict[str, int]]:
    """The receive mode and its parameters from ``--mode`` and the knobs.

    Without ``--mode`` the knobs pick the mode (``--rx-usecs 50`` means coalesce); knobs of
    two different modes, or of a mode other than ``--mode``, are an error.
    """
    params = {k: getattr(args, k) for k in KNOB_MODE if getattr(args, k, None) is not None}
    implied = {KNOB_MODE[k] for k in params}
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
        wrong = sorted(k for k in params if KNOB_MODE[k] != mode)
        if wrong:
            raise CliError(not_for_mode(wrong, f"--mode {mode}"))
    from ..modes import make_mode

    try:
        make_mode(mode, **params)  # validate values now, before anything is created
    except ValueError as e:
        raise CliError(str(e)) from None
    return mode, params


def not_for_mode(knobs: list[str], mode: str) -> str:
    """The error sentence for mode knobs given with a mode they do not belong to."""
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
    """Validate (and normalise in place) the shared stack options; CliError if wrong."""
    if not args.tap or len(args.tap.encode()) > 15 or "/" in args.tap or args.tap in (".", ".."):
        raise CliError(f"--tap {args.tap!r} is not a valid interface name (1-15 bytes, no '/')")
    args.ip = _check_interface(args.ip, "--ip")
    if args.peer:
        args.peer = _check_interface(args.peer, "--peer")
        if args.peer.split("/")[0] == args.ip.split("/")[0]:
            raise CliError(f"--ip and --peer are the same address {args.ip.split('/')[0]}")
    for what in ("ip6", "peer6"):
        text = getattr(args, what, None)
        if text is not None:
            try:
                iface6 = ipaddress.IPv6Interface(text)
            except ValueError:
                raise CliError(f"--{what[:-1]} {text!r} is not an IPv6 address/prefix") from None
            ip6 = iface6.ip
            if ip6.is_multicast or ip6.is_unspecified or ip6.is_loopback or ip6.ipv4_mapped:
                raise CliError(f"--{what[:-1]} {text!r} cannot be an interface address")
            if "/" not in text:
                setattr(args, what, f"{iface6.ip}/64")
    if getattr(args, "ip6", None) and getattr(args, "peer6", None):
        if args.ip6.split("/")[0] == args.peer6.split("/")[0]:
            raise CliError(f"--ip and --peer are the same address {args.ip6.split('/')[0]}")
    if args.gateway:
        try:
            ipaddress.IPv4Address(args.gateway)
        except ValueError:
            raise CliError(f"--gateway {args.gateway!r} is not an IPv4 address") from None
    if args.mtu is not None and not 68 <= args.mtu <= 65535:
        raise CliError(f"--mtu {args.mtu} is outside 68..65535")
    if args.mac and not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", args.mac):
        raise CliError(f"--mac {args.mac!r} is not a MAC address like 02:00:00:00:00:02")


def tcp_config_from_args(args: argparse.Namespace) -> TcpConfig:
    """The TcpConfig the shared options ask for (--congestion, --recovery, --ecn)."""
    from ..proto.tcp.config import RECOVERY_MODES, TcpConfig

    sack, rack = RECOVERY_MODES[getattr(args, "recovery", "rack")]
    return TcpConfig(
        congestion=getattr(args, "congestion", "newreno"), sack=sack, rack=rack,
        ecn=getattr(args, "ecn", "off") == "on",
    )  # fmt: skip


@contextlib.asynccontextmanager
async def open_stack_from_args(args: argparse.Namespace) -> AsyncIterator[Stack]:
    """Create the namespace (``--netns``), the TAP and the stack; remove them all on exit.

    Cleanup runs on normal exit, on errors and on cancellation (``anp`` turns SIGINT and
    SIGTERM into cancellation of the main task). Raises :class:`CliError` for the errors a
    user can fix.
    """
    _check_stack_args(args)
    mode, params = mode_from_args(args)
    from ..nic.netns import Netns
    from ..nic.tap import TapNic
    from ..stack import Stack, StackConfig

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
                peer6=getattr(args, "peer6", None),
            )
        except PermissionError:
            raise CliError(
                f"no permission to create TAP {args.tap}: run as root (CAP_NET_ADMIN)"
            ) from None
        except OSError as e:
            raise CliError(f"cannot create TAP {args.tap}: {reason(e)}") from None
        cfg = StackConfig(
            nic=nic,
            ip=args.ip,
            ip6=getattr(args, "ip6", None),
            mac=args.mac,
            gateway=args.gateway,
            mtu=args.mtu,
            mode=mode,
            mode_params=params,
            pcap=args.pcap,
            tcp=tcp_config_from_args(args),
        )
        try:
            stack = Stack(cfg)
        except OSError as e:
            raise CliError(f"cannot start the stack: {reason(e)}") from None
        async with stack:
            if getattr(args, "trace", None) is not None:
                from ..obs.trace import TraceFilterError, Tracer, printer

                try:
                    Tracer(stack, printer(), filter=args.trace or None).attach()
                except TraceFilterError as e:
                    raise CliError(f"--trace: {e}") from None
            if stack.v6 is not None:
                # the commands start once DAD made the IPv6 addresses ours (RFC 4862 5.4)
                for _ in range(300):
                    if stack.v6.ready or stack.v6.dad.duplicates:
                        break
                    await asyncio.sleep(0.01)
                if stack.v6.dad.duplicates:
                    raise CliError(f"--ip {args.ip6}: the address is in use on the link (DAD)")
            yield stack
    finally:
        if nic is not None:
            nic.close()  # idempotent; the stack closes it too
        if ns is not None:
            ns.delete()
