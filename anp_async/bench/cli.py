"""``anp bench``: latency, throughput and receive-livelock experiments against the kernel.

    anp bench latency    [--modes ...|--sweep KNOB=V,...] [--repeat N] [--sizes ...] ...
    anp bench throughput [--modes ...] [--bytes N] ...
    anp bench livelock   [--modes ...|--sweep ...] [--rates ...] [--app-work-us US] ...

Every run builds its own namespaces (deleted on exit, also on an error or Ctrl-C), writes
a results folder (``--out``; default ``bench/results/<timestamp>-<bench>``) and prints a
summary table; ``--compare OLD`` adds a table of new/old ratios.

Importing this module registers the command with :mod:`anp_async.cli` (list
``"anp_async.bench.cli"`` in ``anp_async.cli.main.EXTRA_COMMAND_MODULES``); :func:`add_bench_parser` and
:func:`run_bench` serve any other argparse front end, :func:`main` runs it stand-alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .apps import BenchError
from .common import PLACEMENTS

HELP = "latency, throughput and receive-livelock experiments against the kernel"
MODES = ("interrupt", "coalesce", "poll", "adaptive")
PROTOS = ("tcp", "udp", "icmp")
DIRECTIONS = ("stack-server", "stack-client")

#: (normal, --quick) defaults of every option a quick run shrinks.
DEFAULTS: dict[str, dict[str, tuple[Any, Any]]] = {
    "latency": {
        "sizes": ([64, 1024, 16384, 65536], [64, 1024]),
        "count": (2000, 200),
        "warmup": (200, 20),
    },
    "throughput": {"bytes": (64 << 20, 4 << 20)},
    "burst": {"conns": ([100, 1000], [100]), "size": (64 << 10, 64 << 10), "rounds": (10, 2)},
    "livelock": {
        "rates": ([5000, 10000, 20000, 40000, 80000, 160000], [5000, 20000, 80000]),
        "duration": (2.0, 0.5),
    },
}


def _csv(choices: tuple[str, ...] | None = None, conv: Any = str) -> Any:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        if choices is not None:
            bad = [i for i in items if i not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"{', '.join(bad)} not in {', '.join(choices)}")
        try:
            return [conv(i) for i in items]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _size(text: str) -> int:
    from anp_async.cli import parse_size

    return parse_size(text)


def configure_bench(p: argparse.ArgumentParser) -> None:
    """Arguments of ``anp bench`` (the parser of the ``bench`` subcommand)."""
    sub = p.add_subparsers(
        dest="bench",
        metavar="{latency,throughput,livelock,burst,tcp-compare,preload,trace-cost,scale,soak}",
        required=True,
    )
    from . import preload, scale, soak, tcp_compare, trace_cost

    pl = sub.add_parser("preload", help=preload.HELP, description=preload.HELP)
    preload.configure(pl)
    trc = sub.add_parser("trace-cost", help=trace_cost.HELP, description=trace_cost.HELP)
    trace_cost.configure(trc)
    sc = sub.add_parser("scale", help=scale.HELP, description=scale.HELP)
    scale.configure(sc)
    sk = sub.add_parser("soak", help=soak.HELP, description=soak.HELP)
    soak.configure(sk)

    tc = sub.add_parser(
        "tcp-compare",
        help="NewReno, SACK, SACK+RACK-TLP and ECN marking through the seeded fault injector",
        description=tcp_compare.__doc__.split("\n")[0] if tcp_compare.__doc__ else None,
    )
    tcp_compare.configure(tc)
    helps = {
        "latency": "request/response latency per mode and size, with kernel baselines",
        "throughput": "bulk TCP transfer each direction per mode, with the kernel baseline",
        "livelock": "offered vs delivered UDP rate per mode (receive livelock)",
        "burst": "N connections at once, each echoing B bytes: stack vs asyncio on kernel sockets",
    }
    for name, text in helps.items():
        b = sub.add_parser(name, help=text, description=text)
        b.add_argument(
            "--modes",
            type=_csv(MODES + ("hardirq",) if name == "livelock" else MODES),
            default=["interrupt", "adaptive"] if name == "burst" else list(MODES),
            help=(
                "receive modes (default: interrupt,adaptive)"
                if name == "burst"
                else "receive modes (default: all four)"
            )
            + (
                "; hardirq models interrupts that preempt the application "
                "(anp_async/bench/hardirq.py)"
                if name == "livelock"
                else ""
            ),
        )
        b.add_argument("--quick", action="store_true", help="small run, under a minute")
        b.add_argument("--out", type=Path, help="results folder (default bench/results/...)")
        b.add_argument("--compare", metavar="OLD", help="earlier results folder or json")
        b.add_argument(
            "--loop",
            choices=("asyncio", "uvloop"),
            default="asyncio",
            help="event loop of the stack and asyncio peers",
        )
        b.add_argument("--seed", type=int, default=1, help="seed of all payloads")
        if name != "livelock":
            b.add_argument(
                "--queues", type=int, default=1, metavar="N",
                help="the stack as a multi-queue host: a TAP with N queues, one stack worker "
                "process each (anp up --queues N); CPU figures are all workers' (default 1)",
            )  # fmt: skip
        b.add_argument(
            "--phase-time",
            type=float,
            default=30.0,
            help="time bound of one phase in seconds (default %(default)s)",
        )
        if name in ("latency", "livelock"):
            from .sweep import parse_knob, parse_knob_list

            b.add_argument(
                "--sweep", type=parse_knob_list, metavar="KNOB=V1,V2,...",
                help="measure one receive-mode knob at each value instead of --modes "
                "(rx-usecs, rx-frames, budget, weight, busy-poll-usecs), e.g. rx-usecs=0,10,50,200",
            )  # fmt: skip
            b.add_argument(
                "--set", type=parse_knob, action="append", metavar="KNOB=V",
                help="with --sweep: fix another knob of the swept mode (repeatable)",
            )  # fmt: skip
            b.add_argument(
                "--repeat", type=int, default=1, metavar="N",
                help="run every setup N times (fresh stack each); report median and spread",
            )  # fmt: skip
        if name == "latency":
            b.add_argument(
                "--no-baselines", action="store_true",
                help="skip the kernel and asyncio-on-kernel-sockets baselines",
            )  # fmt: skip
            b.add_argument("--sizes", type=_csv(conv=_size), help="message sizes (bytes)")
            b.add_argument(
                "--family", type=int, choices=(4, 6), default=4,
                help="IP version the peers talk (6: the stack is dual-stack, IPv6 used)",
            )  # fmt: skip
            b.add_argument("--protos", type=_csv(PROTOS), default=list(PROTOS))
            b.add_argument("--directions", type=_csv(DIRECTIONS), default=list(DIRECTIONS))
            b.add_argument(
                "--placement", choices=tuple(PLACEMENTS), default="free",
                help="CPUs of the process under test and its peer: free (the scheduler's "
                "choice, default), same (both on CPU 0), apart (CPU 0 and CPU 1)",
            )  # fmt: skip
            b.add_argument("--count", type=int, help="measured requests per phase")
            b.add_argument("--warmup", type=int, help="warm-up requests per phase (excluded)")
        elif name == "throughput":
            b.add_argument("--bytes", type=_size, help="bytes per transfer (e.g. 64M)")
        elif name == "burst":
            b.add_argument(
                "--conns", type=_csv(conv=int), metavar="N[,N...]",
                help="connections opened at once (default 100,1000; --quick 100)",
            )  # fmt: skip
            b.add_argument("--size", type=_size, help="bytes each connection echoes (64K)")
            b.add_argument("--rounds", type=int, help="rounds per count (default 10; --quick 2)")
        else:
            b.add_argument("--rates", type=_csv(conv=int), help="offered datagrams/s")
            b.add_argument("--duration", type=float, help="seconds per rate")
            b.add_argument(
                "--app-work-us", type=int, default=0, metavar="US",
                help="CPU work the application does per datagram (hashing), in microseconds",
            )  # fmt: skip
            b.add_argument(
                "--drain",
                type=float,
                default=0.3,
                help="seconds to let queued datagrams drain after each rate",
            )


def add_bench_parser(subparsers: Any) -> None:
    """Add ``bench`` to an argparse subparsers object (dispatch with :func:`run_bench`)."""
    p = subparsers.add_parser("bench", help=HELP, description=HELP)
    configure_bench(p)


def _apply_defaults(args: argparse.Namespace) -> None:
    for key, (normal, quick) in DEFAULTS[args.bench].items():
        if getattr(args, key, None) is None:
            setattr(args, key, quick if args.quick else normal)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"_command", "command", "out", "compare"}
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in skip and not callable(v)
    }


def execute(args: argparse.Namespace, console: Any = None) -> dict[str, Any]:
    """Run the benchmark ``args`` describe; return the results document (also written to
    ``args.out``). Raises BenchError when a peer failed (nothing is written then)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from . import report
    from .procs import BenchEnv
    from .runner import PLANS, RUNNERS

    console = console or Console()
    _apply_defaults(args)
    if getattr(args, "repeat", 1) < 1:
        raise BenchError("--repeat must be at least 1")
    queues = getattr(args, "queues", 1)
    if not 1 <= queues <= 64:
        raise BenchError(f"--queues {queues}: 1..64")
    if queues > 1 and getattr(args, "family", 4) == 6:
        raise BenchError("--queues > 1 with --family 6: the steering program sends IPv6 to queue 0")
    placement = getattr(args, "placement", "free")
    if placement != "free" and queues > 1:
        raise BenchError(f"--placement {placement} pins one process: not with --queues > 1")
    if placement == "apart" and len(os.sched_getaffinity(0)) < 2:
        raise BenchError("--placement apart needs two CPUs")
    if args.bench in ("latency", "livelock"):
        from .sweep import stack_setups

        try:
            stack_setups(args)
        except ValueError as e:
            raise BenchError(str(e)) from None
    out: Path = args.out or report.default_out_dir(args.bench)
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    start = report.now_iso()
    t0 = time.monotonic()
    total = len(PLANS[args.bench](args))
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        task = prog.add_task(f"bench {args.bench}", total=total)

        def progress(what: str) -> None:
            prog.update(task, advance=1, description=f"{args.bench}: {what}")

        with BenchEnv(
            logs, loop=args.loop, family=getattr(args, "family", 4), queues=queues,
            placement=getattr(args, "placement", "free"),
        ) as env:
            rows, samples = RUNNERS[args.bench](env, args, progress)
    for r in rows:  # the stack's rows name the queue count (the baselines are one process)
        if r.get("setup") not in ("kernel", "asyncio"):
            r["queues"] = queues
    doc: dict[str, Any] = {
        "benchmark": args.bench,
        **report.machine_info(),
        "parameters": _params(args),
        "seed": args.seed,
        "start": start,
        "end": report.now_iso(),
        "duration_s": time.monotonic() - t0,
        "summaries": rows,
    }
    report.write_results(out, doc, samples)
    doc["plots"] = report.make_plots(out, args.bench, rows, samples)
    report.write_results(out, doc, {})  # again, now listing the plots
    doc["out"] = str(out)
    return doc


def _check_result_folders(args: argparse.Namespace) -> str | None:
    """Before a run of many minutes: --compare must hold a run of the same benchmark, and
    --out must not hold another benchmark's results (they would be mixed)."""
    from . import report

    for opt, path, must_exist in (
        ("--compare", getattr(args, "compare", None), True),
        ("--out", getattr(args, "out", None), False),
    ):
        if path is None:
            continue
        p = Path(path)
        results = p / "results.json" if p.is_dir() or not str(p).endswith(".json") else p
        if not results.exists():
            if must_exist:
                return f"{opt} {path}: no results.json there (a results folder or its json)"
            continue
        try:
            old = report.load_results(results)
        except (OSError, ValueError) as e:
            return f"{opt} {path}: cannot read its results ({e})"
        bench = old.get("benchmark") if isinstance(old, dict) else None
        if bench != args.bench:
            return f"{opt} {path} holds a {bench} run, not {args.bench}"
    return None


def run_bench(args: argparse.Namespace) -> int:
    """``anp bench ...``: run, print the table (and the comparison), return the exit status."""
    from rich.console import Console

    from . import report

    if args.bench == "tcp-compare":  # two stacks on the in-memory wire: no root needed
        from . import tcp_compare

        return tcp_compare.run(args)
    if args.bench == "preload":  # its own harness: the C client through LD_PRELOAD vs kernel
        from . import preload

        return preload.run(args)
    if args.bench == "scale":  # stack workers on a multi-queue TAP vs the kernel
        from . import scale

        return scale.run(args)
    if args.bench == "soak":  # mixed traffic with the kernel over a TAP, for minutes
        from . import soak

        return soak.run(args)
    if args.bench == "trace-cost":  # two stacks on the in-memory wire: no root needed
        from . import trace_cost

        return trace_cost.run(args)
    console = Console()
    if not console.is_terminal:  # piped into a file: do not squeeze the table to 80 columns
        console = Console(width=170)
    problem = _check_result_folders(args)
    if problem:
        print(f"anp: error: {problem}.", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print(
            "anp: error: anp bench needs root (network namespaces, /dev/net/tun).", file=sys.stderr
        )
        return 2
    old_term = None
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        old_term = signal.signal(signal.SIGTERM, _sigterm)
    try:
        doc = execute(args, console)
    except BenchError as e:
        print(f"anp: error: benchmark aborted, nothing reported: {e}", file=sys.stderr)
        return 1
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    console.print(report.summary_table(args.bench, doc["summaries"], getattr(args, "queues", 1)))
    for line in report.warning_lines(doc["summaries"]):
        console.print(f"[yellow]warning:[/] {line}")
    for line in report.asyncio_ratio_lines(args.bench, doc["summaries"]):
        console.print(line)
    where = getattr(args, "placement", "free")
    if where != "free":
        a, b = PLACEMENTS[where]
        console.print(f"placement: {where} (under test on CPU {a}, its peer on CPU {b})")
    console.print(f"results: {doc['out']}")
    if doc.get("plots"):
        console.print("plots: " + ", ".join(str(Path(doc["out"]) / p) for p in doc["plots"]))
    if args.compare:
        old = report.load_results(args.compare)
        ratios = report.compare(doc, old)
        console.print(report.compare_table(args.bench, ratios, str(args.compare)))
        old_p = (old.get("parameters") or {}).get("placement", "free")
        if old_p != getattr(args, "placement", old_p):
            console.print(f"(placement: new {args.placement}, old {old_p})")
        old_q = (old.get("parameters") or {}).get("queues", 1)
        if old_q != getattr(args, "queues", 1):
            console.print(f"(stack queues: new {getattr(args, 'queues', 1)}, old {old_q})")
    return 0


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that remove namespaces


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``anp bench`` arguments (without the leading ``bench``)."""
    p = argparse.ArgumentParser(prog="anp bench", description=HELP)
    configure_bench(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m anp_async.bench.cli latency --quick``."""
    try:
        return run_bench(parse_args(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return 130


def _register() -> None:
    with contextlib.suppress(ImportError):
        from anp_async.cli import Command, register_command

        register_command(Command("bench", HELP, configure_bench, run_bench))


_register()

if __name__ == "__main__":
    raise SystemExit(main())
