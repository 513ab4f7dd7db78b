"""``anp bench soak``, briefly: mixed traffic with the kernel over a TAP through loss, every
byte checked, no TCB left but TIME_WAIT afterwards (the real runs last minutes)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.netutil import is_root


def test_short_soak_passes_and_reports() -> None:
    assert is_root(), "needs root (namespace, TAP)"
    r = subprocess.run(
        [sys.executable, "-m", "anp_async", "bench", "soak", "--minutes", "0.1", "--conns", "4",
         "--loss", "0.02", "--json"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    print({k: rep[k] for k in ("stack_clients", "stack_retransmits", "tcbs_at_end")})
    assert rep["problems"] == []
    assert rep["stack_clients"]["ok"] > 10 and rep["kernel_clients"]["client_ok"] > 10
    assert rep["stack_clients"]["bytes"] > 0 and rep["faults"]["dropped"] > 0
    assert set(rep["tcbs_at_end"]) <= {"TIME_WAIT"}
