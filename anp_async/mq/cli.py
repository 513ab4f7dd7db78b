"""``anp up --queues N``: a multi-queue host from the shared stack options."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..cli.base import CliError, reason
from ..cli.options import _check_stack_args, mode_from_args, tcp_config_from_args
from ..cli.serving import control_path, ensure_no_stack_on
from ..preload.launch import api_socket_path
from .host import Death, HostConfig, MultiQueueHost


def _report(death: Death) -> None:
    print(f"anp up: {death.describe()}; its connections are gone, the other workers keep "
          "serving", file=sys.stderr, flush=True)  # fmt: skip


async def run_up(args: argparse.Namespace) -> int:
    """Run ``args.queues`` workers until SIGINT/SIGTERM (the caller cancels this task)."""
    _check_stack_args(args)
    mode, params = mode_from_args(args)
    if getattr(args, "ip6", None) and args.queues > 1:
        raise CliError(
            "--ip with an IPv6 address and --queues > 1: not supported yet (the steering "
            "program sends every IPv6 frame to queue 0, so only one worker would hear it)"
        )
    trace = getattr(args, "trace", None)
    if trace:
        from ..obs.trace import TraceFilterError, parse_filter

        try:
            parse_filter(trace)
        except TraceFilterError as e:
            raise CliError(f"--trace: {e}") from None
    ensure_no_stack_on(args)
    from ..nic.netns import Netns

    ns = None
    if args.netns:
        try:
            ns = Netns.create(args.netns)
        except FileExistsError:
            raise CliError(f"network namespace {args.netns} already exists") from None
        except OSError as e:
            raise CliError(f"cannot create network namespace {args.netns}: {e}") from None
    try:
        cfg = HostConfig(
            tap=args.tap,
            queues=args.queues,
            ip=args.ip,
            peer=args.peer,
            netns=ns,
            mac=args.mac,
            gateway=args.gateway,
            mtu=args.mtu or 1500,
            vnet_hdr=getattr(args, "offload", True),
            mode=mode,
            mode_params=params,
            congestion=getattr(args, "congestion", "newreno"),
            tcp=tcp_config_from_args(args),
            ip6=getattr(args, "ip6", None),
            peer6=getattr(args, "peer6", None),
            pcap=args.pcap,
            control=control_path(args),
            api=api_socket_path(args.tap),
            echo=args.echo,
            http=args.http,
            trace=trace,
            metrics=getattr(args, "metrics", None),
            loop=getattr(args, "loop", "asyncio"),
            pin_cpus=getattr(args, "pin_cpus", False),
            restart=getattr(args, "restart", True),
        )
        try:
            host = MultiQueueHost(cfg, on_death=_report)
            await host.start()
        except (OSError, RuntimeError, ValueError) as e:
            raise CliError(
                f"cannot start {args.queues} workers on TAP {args.tap}: {reason(e)}"
            ) from None
        try:
            where = f" in netns {args.netns}" if args.netns else ""
            serves = "".join(
                f", {name} port {port}"
                for name, port in (
                    ("echo udp+tcp", args.echo),
                    ("http", args.http),
                    ("metrics", cfg.metrics),
                )
                if port is not None
            )
            print(
                f"anp up: tap {args.tap}{where}, {args.queues} queues, workers (pids) "
                f"{', '.join(str(p) for p in host.pids())}, stack {args.ip} mac {host.mac}, "
                f"kernel side {args.peer}, mode {mode}{serves}, control {cfg.control} "
                "(every worker; TAP.wN.sock for one), "
                f"socket API {cfg.api} (anp run --attach --tap {args.tap}) (SIGINT/SIGTERM to stop)",
                flush=True,
            )
            await asyncio.Event().wait()
        finally:
            await host.close()
    finally:
        if ns is not None:
            ns.delete()
    return 0
