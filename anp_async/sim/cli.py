"""``anp sim``: deterministic simulation from the command line.

::

    anp sim --seeds 1-1000 [--scenario NAME] [--faults PROFILE|k=v,...] [-j N]
    anp sim --seed S [--trace]         replay one seed (its event log with --trace)
    anp sim --soak MINUTES             mixed scenarios with more data, until time is up
    anp sim --list                     the scenarios and fault profiles

``--seeds`` prints one line per failing seed, a progress line on stderr and, last,
``N/N seeds passed`` (exit status 1 when any failed). ``--seed`` prints the seed's summary
and ``digest=<sha256 of the event log>``: the same seed gives the same digest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..cli.base import CliError, Command, register_command
from .run import FAULT_PROFILES, parse_faults, run_seed
from .runner import Outcome, parse_seeds, run_many, soak
from .scenarios import SCENARIOS

#: Most minutes a soak run may be asked for (a day).
MAX_SOAK_MINUTES = 24 * 60


def _configure(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--seeds", metavar="RANGE", help="seeds to run, e.g. 1-1000 or 1,5,9-12")
    what.add_argument("--seed", metavar="S", help="replay one seed")
    what.add_argument("--soak", metavar="MINUTES", help="soak run for MINUTES of real time")
    what.add_argument("--list", action="store_true", help="list scenarios and fault profiles")
    p.add_argument("--scenario", metavar="NAME", help="run only this scenario")
    p.add_argument(
        "--faults", metavar="SPEC", help="a fault profile, or loss=0.1,dup=0.05,... (both ways)"
    )
    p.add_argument("--trace", action="store_true", help="with --seed: print the event log")
    p.add_argument("-j", "--jobs", metavar="N", help="worker processes (default: every core)")
    p.add_argument("--json", action="store_true", help="with --soak: print the report as JSON")


def _int(text: str | None, what: str, lo: int, hi: int) -> int | None:
    if text is None:
        return None
    try:
        v = int(text)
    except ValueError:
        raise CliError(f"{what} must be an integer, got {text!r}") from None
    if not lo <= v <= hi:
        raise CliError(f"{what} must be within {lo}..{hi}, got {v}")
    return v


def cmd_sim(args: argparse.Namespace) -> int:
    """Run the simulator as the options say (see the module docstring)."""
    if args.list:
        print("scenarios: " + " ".join(SCENARIOS))
        print("faults: " + " ".join(FAULT_PROFILES) + "  (or key=value,... e.g. loss=0.1,dup=0.02)")
        return 0
    if args.scenario is not None and args.scenario not in SCENARIOS:
        raise CliError(f"unknown scenario {args.scenario!r}; choose from {', '.join(SCENARIOS)}")
    if args.faults is not None:
        try:
            parse_faults(args.faults)
        except ValueError as e:
            raise CliError(str(e)) from None
    jobs = _int(args.jobs, "--jobs", 1, 1024)
    if args.seed is not None:
        seed = _int(args.seed, "--seed", 0, 2**63)
        assert seed is not None
        return _replay(seed, args.scenario, args.faults, args.trace)
    if args.trace:
        raise CliError("--trace goes with --seed S (one seed's event log)")
    if args.soak is not None:
        return _soak(args.soak, jobs, args.json)
    try:
        seeds = parse_seeds(args.seeds or "1-100")
    except ValueError as e:
        raise CliError(str(e)) from None

    extra = "".join(
        f" --{k} {v}" for k, v in (("scenario", args.scenario), ("faults", args.faults)) if v
    )

    def on_fail(o: Outcome) -> None:
        print(f"{o.line}  (replay: anp sim --seed {o.seed}{extra} --trace)", flush=True)

    out = run_many(seeds, args.scenario, args.faults, jobs=jobs, on_fail=on_fail)
    passed = sum(o.ok for o in out)
    wall = sum(o.wall for o in out)
    virtual = sum(o.virtual for o in out)
    print(
        f"# {len(out)} seeds, {wall:.1f} s of CPU in workers, {virtual / 3600:.1f} h of "
        f"virtual time, {sum(o.totals.get('app_bytes', 0) for o in out) / 2**20:.1f} MiB "
        "checked",
        file=sys.stderr,
    )
    print(f"{passed}/{len(out)} seeds passed")
    return 0 if passed == len(out) else 1


def _replay(seed: int, scenario: str | None, faults: str | None, trace: bool) -> int:
    r = run_seed(seed, scenario, faults, trace=trace)
    if trace:
        out = sys.stdout
        for line in r.lines:
            out.write(line + "\n")
    print(r.summary())
    for f in r.failures[1:]:
        print(f"  also: {f}")
    print(f"virtual={r.virtual_seconds:.6f}s steps={r.steps} events={r.events}")
    print(f"digest={r.digest}")
    # Real time varies from run to run: not on stdout, which must replay byte for byte.
    print(f"wall={r.wall_seconds:.3f}s", file=sys.stderr)
    return 0 if r.ok else 1


def _soak(text: str, jobs: int | None, as_json: bool) -> int:
    try:
        minutes = float(text)
    except ValueError:
        raise CliError(f"--soak takes minutes, got {text!r}") from None
    if not 0 < minutes <= MAX_SOAK_MINUTES:
        raise CliError(f"--soak must be more than 0 and at most {MAX_SOAK_MINUTES} minutes")
    rep = soak(minutes, jobs=jobs)
    if as_json:
        print(json.dumps(rep, indent=2))
    else:
        t = rep["totals"]
        conns = sum(v for k, v in t.items() if k.endswith("_opens"))
        print(
            f"soak: {rep['seeds']} seeds in {minutes:g} min of real time on {jobs or os.cpu_count()} cores"
        )
        print(f"  virtual time   {rep['virtual_seconds'] / 3600:.2f} h")
        print(f"  connections    {conns}")
        print(f"  bytes checked  {t.get('app_bytes', 0)}")
        print(f"  frames         {t.get('a_frames', 0) + t.get('b_frames', 0)}")
        print(f"  retransmits    {t.get('a_conn_retransmits', 0) + t.get('b_conn_retransmits', 0)}")
        print(
            f"  peak TCBs/host {t.get('peak_tcbs', 0)}, peak frames held by faults {t.get('peak_held', 0)}"
        )
        print(f"  max RSS        {rep['max_rss_kib'] / 1024:.1f} MiB")
        for line in rep["failed"]:
            print(f"  FAIL {line}")
        print(f"{rep['seeds'] - len(rep['failed'])}/{rep['seeds']} seeds passed")
    return 0 if not rep["failed"] else 1


COMMAND = register_command(
    Command("sim", "deterministic simulation of whole networks from seeds", _configure, cmd_sim)
)
