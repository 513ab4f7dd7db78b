"""Bad input never gets a traceback: every ``anp`` command and option, given wrong values,
exits non-zero with one line saying what was wrong.

The commands run as an unprivileged user (``setpriv`` to nobody): "no root" is one of the
wrong inputs, and nothing a generated argument list asks for can create a device. A
table covers the values people get wrong; hypothesis drives every registered command and
option (found by introspecting the parser, so new ones are covered) with generated
argument lists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anp_async.cli.main import build_parser
from tests.netutil import is_root

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
#: A command that accepted its input and runs on: fine (a valid request), not an error.
RUNS_ON = 8.0


def anp_as_nobody(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run ``anp ARGV`` as nobody; None when it was still running after RUNS_ON seconds."""
    if not is_root():
        pytest.fail("this test needs root (to drop to an unprivileged user)")
    proc = subprocess.Popen(
        [*NOBODY, sys.executable, "-m", "anp_async", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp",
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=RUNS_ON)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def check_clean(argv: list[str], r: subprocess.CompletedProcess[str] | None) -> None:
    if r is None:
        return
    assert "Traceback" not in r.stderr, f"anp {argv}:\n{r.stderr}"
    if r.returncode != 0:
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert lines, f"anp {argv}: exit {r.returncode} without a word"
        assert len(lines) == 1 and lines[0].startswith("anp"), f"anp {argv}:\n{r.stderr}"


# ----------------------------------------------------------------- the usual mistakes

TABLE = [
    (["up", "--ip", "300.1.1.1/24"], "--ip"),
    (["up", "--ip", "10.0.0.2/99"], "--ip"),
    (["up", "--mac", "zz:zz"], "--mac"),
    (["up", "--mtu", "x"], "--mtu"),
    (["up", "--mtu", "100000"], "--mtu"),
    (["up", "--tap", "a/b"], "TAP name"),
    (["up", "--tap", "x" * 40], "--tap"),
    (["up", "--gateway", "1.2.3"], "--gateway"),
    (["up", "--echo", "70000"], "port 70000"),
    (["up", "--http", "abc"], "--http"),
    (["up", "--mode", "warp"], "--mode"),
    (["up", "--budget", "0"], "budget"),
    (["up", "--log-level", "loud"], "--log-level"),
    (["up"], "root"),  # no root: says so
    (["ping", "10.0.0.1", "-c", "0"], "-c"),
    (["ping", "10.0.0.1", "-i", "nan"], "-i"),
    (["echo-server", "abc"], "port"),
    (["echo-server", "0"], "port 0"),
    (["echo-client", "x..y", "7"], "host"),
    (["echo-client", "10.0.0.1", "7", "--size", "1Q"], "--size"),
    (["echo-client", "10.0.0.1", "7", "--timeout", "-1"], "--timeout"),
    (["ctl", "--tap", "anpnosuch", "stats"], "no stack runs"),
    (["ctl", "--tap", "x", "mode", "warp"], "warp"),
    (["stats", "--count", "x"], "--count"),
    (["top", "--interval", "0"], "--interval"),
    (["trace", "--count", "-5"], "--count"),
    (["bench", "latency", "--modes", "warp"], "warp"),
    (["bench", "throughput", "--bytes", "1Q"], "--bytes"),
    (["bench", "latency"], "root"),
    (["bench", "tcp-compare", "--bytes", "-1"], "bytes"),
    (["run"], "no program"),
    (["run", "--map-host", "bad", "--", "python3", "-c", "1"], "--map-host"),
    (["sim", "--seeds", "5-1"], "--seeds"),
    (["sim", "--faults", "loss=2"], "loss"),
    (["nosuchcommand"], "invalid choice"),
]


@pytest.mark.parametrize(("argv", "says"), TABLE, ids=[" ".join(a)[:40] for a, _ in TABLE])
def test_usual_mistakes_give_one_clear_line(argv: list[str], says: str) -> None:
    r = anp_as_nobody(argv)
    assert r is not None, f"anp {argv} ran on instead of refusing"
    assert r.returncode != 0
    check_clean(argv, r)
    assert says in r.stderr, r.stderr


# ------------------------------------------------------------------ generated input


def _options() -> dict[tuple[str, ...], list[argparse.Action]]:
    """Every (sub)command path and its actions, from the real parser."""
    out: dict[tuple[str, ...], list[argparse.Action]] = {}

    def walk(path: tuple[str, ...], p: argparse.ArgumentParser) -> None:
        actions = [a for a in p._actions if not isinstance(a, argparse._HelpAction)]
        out[path] = actions
        for a in actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    walk((*path, name), sp)

    walk((), build_parser())
    return {k: v for k, v in out.items() if k}


OPTIONS = _options()
BAD_VALUES = [
    "", "-1", "0", "70000", "1e9", "nan", "inf", "abc", "300.1.1.1", "10.0.0.2/99",
    "10.0.0.2/x", "::1", "zz:zz", "a/b", "x" * 40, "/nonexistent/dir/f", "/proc/nope", "/",
    "..", "é", "1Q", "-5K", "1-", "a=b", "%s%n", "$(id)", "' OR 1",
]  # fmt: skip
value = st.one_of(
    st.sampled_from(BAD_VALUES),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12),
)


@st.composite
def argument_lists(draw: st.DrawFn) -> list[str]:
    path = draw(st.sampled_from(sorted(OPTIONS)))
    argv = list(path)
    actions = OPTIONS[path]
    for a in draw(st.lists(st.sampled_from(actions), max_size=4)) if actions else []:
        if isinstance(a, argparse._SubParsersAction) or a.dest == "soak":
            continue
        if a.option_strings:
            argv.append(draw(st.sampled_from(a.option_strings)))
        if a.nargs != 0:
            argv.append(draw(value))
    argv += draw(st.lists(value, max_size=2))  # stray positionals
    return argv


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(argv=argument_lists())
def test_generated_argument_lists_never_give_a_traceback(argv: list[str]) -> None:
    check_clean(argv, anp_as_nobody(argv))


def test_bench_tcp_compare_checks_its_own_options() -> None:
    for argv, says in (
        (["--loss", "2"], "loss probability"),
        (["--seeds", "x"], "--seeds"),
        (["--configs", "nope"], "--configs"),
        (["--json", "/nonexistent/x.json"], "--json"),
    ):
        r = anp_as_nobody(["bench", "tcp-compare", *argv])
        assert r is not None and r.returncode == 2
        check_clean(argv, r)
        assert says in r.stderr


def test_bench_refuses_result_folders_of_another_benchmark() -> None:
    """Checked before a run of many minutes, not after it."""
    tmp_path = Path(tempfile.mkdtemp(prefix="anp-bad-input-"))  # readable by nobody
    os.chmod(tmp_path, 0o755)
    folder = tmp_path / "throughput-run"
    folder.mkdir()
    (folder / "results.json").write_text('{"benchmark": "throughput", "summaries": []}')
    for opt, says in (("--compare", "holds a throughput run, not latency"),
                      ("--out", "holds a throughput run, not latency")):  # fmt: skip
        r = anp_as_nobody(["bench", "latency", opt, str(folder)])
        assert r is not None and r.returncode == 2
        check_clean([opt], r)
        assert says in r.stderr
    r = anp_as_nobody(["bench", "latency", "--compare", str(tmp_path / "none")])
    assert r is not None and r.returncode == 2 and "no results.json" in r.stderr
    shutil.rmtree(tmp_path)
