"""``anp sim`` from the command line: the summary line, replay digests, clean errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def anp_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anp_async", "sim", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_seeds_range_ends_with_the_pass_count() -> None:
    out = anp_sim("--seeds", "1-40", "--jobs", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "40/40 seeds passed"


def test_trace_replays_byte_for_byte() -> None:
    one = anp_sim("--seed", "21", "--trace")
    two = anp_sim("--seed", "21", "--trace")
    assert one.returncode == 0, one.stdout[-2000:]
    assert one.stdout == two.stdout
    digest = [line for line in one.stdout.splitlines() if line.startswith("digest=")]
    assert len(digest) == 1 and len(digest[0]) == len("digest=") + 64
    assert len(one.stdout.splitlines()) > 50  # the event log itself


@pytest.mark.parametrize(
    "args",
    [
        ["--seeds", "x"],
        ["--seeds", "5-1"],
        ["--seed", "-3"],
        ["--scenario", "nope"],
        ["--faults", "loss=2"],
        ["--faults", "foo=1"],
        ["--soak", "0"],
        ["--jobs", "0"],
        ["--trace"],
    ],
)
def test_bad_options_give_one_clear_line(args: list[str]) -> None:
    out = anp_sim(*args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anp: error: "), out.stderr
