"""Every program in ``examples/`` runs as the README says (as root, each in a namespace of
its own that it removes) and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from anp_async.nic.netns import Netns, unique_name

pytestmark = [pytest.mark.root, pytest.mark.timeout(90)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: What each example must print (a line fragment per check).
EXPECT = {
    "echo_server.py": ["sent 110000 bytes, got 110000 back, identical"],
    "echo_client.py": ["echoed b'three\\n'", "port 7001: Connection refused"],
    "datagram.py": ["sent 8000 bytes, got 8000 back", "ConnectionRefusedError", "reassembled 1"],
    "mode_switch.py": ["0% packet loss", "interrupt ", "adaptive(weight=64)"],
    "tls_client.py": ["TLS: TLSv1.3", "HTTPS reply: 'HTTP/1.0 200 ok'"],
    "custom_mode.py": [
        "custom mode tick (2 ms)  ping: 10 of 10 answered",
        "stack reports mode tick",
    ],
}


def test_every_example_is_tested() -> None:
    found = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert found == set(EXPECT)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_example_runs(name: str) -> None:
    ns = unique_name("anp-ex")
    env = {**os.environ, "ANP_EXAMPLE_NETNS": ns}
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=60, env=env
    )
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    for want in EXPECT[name]:
        assert want in r.stdout, (want, r.stdout)
    assert not Netns(ns).exists()  # the example removed its namespace
