"""``anp up --queues N``: a multi-queue host (:mod:`anp_async.mq`) from the shared stack options.

The CLI side of the multi-queue host lives here, in ``cli/``, so that ``mq/`` never imports
the CLI: :func:`host_config_from_args` and :func:`check_trace_filter` also serve
``anp run --queues N`` (:mod:`.run`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ..mq.host import Death, HostConfig, MultiQueueHost
from ..nic.netns import Netns
from ..preload.launch import api_socket_path
from .base import CliError, reason
from .options import _check_stack_args, mode_from_args, tcp_config_from_args
from .serving import control_path, ensure_no_stack_on


def check_trace_filter(args: argparse.Namespace) -> None:
    """A bad ``--trace`` filter is the user's error before any worker starts."""
    trace = getattr(args, "trace", None)
    if trace:
        from ..obs.trace import TraceFilterError, parse_filter

        try:
            parse_filter(trace)
        except TraceFilterError as e:
            raise CliError(f"--trace: {e}") from None


def host_config_from_args(
    args: argparse.Namespace, netns: Netns | None, **extra: Any
) -> HostConfig:
    """The :class:`HostConfig` the shared stack options describe (``extra``: more fields)."""
    mode, params = mode_from_args(args)
    return HostConfig(
        tap=args.tap,
        queues=args.queues,
        ip=args.ip,
        peer=args.peer,
        netns=netns,
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
        trace=getattr(args, "trace", None),
        loop=getattr(args, "loop", "asyncio"),
        **extra,
    )


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
    check_trace_filter(args)
    ensure_no_stack_on(args)
    ns = None
    if args.netns:
        try:
            ns = Netns.create(args.netns)
        except FileExistsError:
            raise CliError(f"network namespace {args.netns} already exists") from None
        except OSError as e:
            raise CliError(f"cannot create network namespace {args.netns}: {e}") from None
    try:
        cfg = host_config_from_args(
            args,
            ns,
            echo=args.echo,
            http=args.http,
            metrics=getattr(args, "metrics", None),
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
