"""The ``anp`` command end to end, as root, against the Linux kernel.

Every run gets its own namespace ``anp-<random>`` (created by ``anp up --netns`` itself) and
its own TAP name; the fixtures stop the process and delete the namespace even when a test
fails. The kernel-side tools run inside that namespace with ``ip netns exec``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from anp_async import control
from anp_async.nic.netns import Netns, unique_name

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
_VENV_ANP = REPO / ".venv" / "bin" / "anp"
ANP = [str(_VENV_ANP)] if _VENV_ANP.exists() else [sys.executable, "-m", "anp_async"]
_PYPATH = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
ENV = {**os.environ, "PYTHONPATH": _PYPATH}
STACK_IP = "10.0.0.2"


def anp(*argv: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ANP, *argv], capture_output=True, text=True, timeout=timeout, env=ENV, **kw
    )


def in_ns(ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
    )


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


class UpProcess:
    """A running ``anp up --netns NS --tap TAP ...``; ``stop()`` always cleans up."""

    def __init__(self, *extra: str, cmd: str = "up") -> None:
        self.ns = unique_name("anp")
        self.tap = "anpt" + secrets.token_hex(3)
        self.socket = control.socket_path(self.tap)
        self.log = tempfile.TemporaryFile(mode="w+")
        argv = [
            *ANP, cmd, *extra, "--netns", self.ns, "--tap", self.tap,
            "--ip", f"{STACK_IP}/24", "--peer", "10.0.0.1/24",
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=ENV)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"anp exited with {self.proc.returncode}: {self.output()}")
            try:
                return control.call(self.socket, {"cmd": "info"}, timeout=2.0)["info"]
            except (control.NoStackError, OSError):
                time.sleep(0.1)
        pytest.fail(f"control socket {self.socket} never answered: {self.output()}")

    def ctl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return anp("ctl", "--tap", self.tap, *argv, timeout=20)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if Netns(self.ns).exists():
            Netns(self.ns).delete()
        if os.path.exists(self.socket) and not control.serving(self.socket):
            os.unlink(self.socket)
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def up():
    p = UpProcess("--echo", "7")
    try:
        p.wait_ready()
        yield p
    finally:
        p.stop()
    assert p.ns not in namespaces()


def test_up_prints_what_is_up(up):
    info = control.call(up.socket, {"cmd": "info"})["info"]
    assert info["tap"] == up.tap and info["netns"] == up.ns and info["ip"] == STACK_IP
    line = up.output().splitlines()[0]
    assert up.tap in line and up.ns in line and "10.0.0.2/24" in line and up.socket in line


def test_kernel_pings_the_stack(up):
    r = in_ns(up.ns, "ping", "-c", "5", "-i", "0.05", "-W", "1", STACK_IP)
    assert " 5 received" in r.stdout, r.stdout + r.stderr


def test_mode_switch_while_pinging_loses_nothing(up):
    ping = subprocess.Popen(
        ["ip", "netns", "exec", up.ns, "ping", "-c", "60", "-i", "0.02", "-W", "1", STACK_IP],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(0.2)
        r = up.ctl("mode", "poll", "--budget", "32")
        assert r.returncode == 0 and r.stdout.strip() == "mode poll (budget=32)", r.stderr
        time.sleep(0.2)
        r = up.ctl("coalesce", "--rx-usecs", "50", "--rx-frames", "8")
        assert r.returncode == 0 and "mode coalesce" in r.stdout, r.stderr
        time.sleep(0.2)
        r = up.ctl("mode", "adaptive")
        assert r.returncode == 0, r.stderr
        out, _ = ping.communicate(timeout=30)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    assert " 60 received" in out and " 0% packet loss" in out, out
    r = up.ctl("mode")
    assert r.returncode == 0 and r.stdout.startswith("mode adaptive")
    assert up.ctl("mode", "interrupt").returncode == 0  # stop burning a core


def test_stats_json_parses(up):
    in_ns(up.ns, "ping", "-c", "2", "-i", "0.05", STACK_IP)  # traffic to count, run alone too
    r = up.ctl("stats", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["nic"]["rx_frames"] > 0 and stats["icmp"]
    assert stats["mode"]["name"] in ("interrupt", "coalesce", "poll", "adaptive")
    r = up.ctl("stats")
    assert r.returncode == 0 and "protocol counters" in r.stdout and "NIC" in r.stdout
    # `anp stats` is the short form of `anp ctl stats`
    r = anp("stats", "--tap", up.tap, "--json", timeout=20)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["nic"]["rx_frames"] >= stats["nic"]["rx_frames"]


def test_udp_echo_from_the_kernel(up):
    code = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); "
        f"s.sendto(b'hello anp', ('{STACK_IP}', 7)); print(s.recvfrom(100)[0].decode())"
    )
    r = in_ns(up.ns, sys.executable, "-c", code)
    assert r.returncode == 0 and r.stdout.strip() == "hello anp", r.stderr


def test_tcp_echo_from_the_kernel(up):
    code = (
        "import socket, os; data = os.urandom(200_000); "
        f"s = socket.create_connection(('{STACK_IP}', 7), timeout=10); s.sendall(data); "
        "s.shutdown(socket.SHUT_WR); got = bytearray()\n"
        "while chunk := s.recv(65536): got += chunk\n"
        "print('same' if bytes(got) == data else f'differs: {len(got)} bytes')"
    )
    r = in_ns(up.ns, sys.executable, "-c", code)
    assert r.returncode == 0 and r.stdout.strip() == "same", r.stdout + r.stderr


def test_ctl_without_stack_is_one_clear_error():
    r = anp("ctl", "--tap", "anpnone" + secrets.token_hex(2), "stats")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "no stack runs on TAP" in r.stderr
    assert "Traceback" not in r.stderr


def test_sigterm_exits_0_and_removes_everything():
    p = UpProcess()
    try:
        p.wait_ready()
        assert p.ns in namespaces() and os.path.exists(p.socket)
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(15) == 0, p.output()
        assert p.ns not in namespaces()
        assert not os.path.exists(p.socket)
        assert "Traceback" not in p.output()
    finally:
        p.stop()


def test_sigint_exits_0_too():
    p = UpProcess("--mode", "poll")
    try:
        p.wait_ready()
        p.proc.send_signal(signal.SIGINT)
        assert p.proc.wait(15) == 0, p.output()
        assert p.ns not in namespaces()
    finally:
        p.stop()


def test_second_up_on_the_same_tap_is_refused(up):
    r = anp("up", "--tap", up.tap, "--netns", unique_name("anp"), timeout=20)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "already runs on TAP" in r.stderr


def test_existing_namespace_is_one_clear_error():
    with Netns.create() as ns:
        r = anp("up", "--netns", ns.name, "--tap", "anpt" + secrets.token_hex(3), timeout=20)
        assert r.returncode == 2
        assert r.stderr == f"anp: error: network namespace {ns.name} already exists.\n"
        assert ns.exists()  # not ours: left alone
    assert ns.name not in namespaces()


def test_anp_ping_reaches_the_kernel():
    ns = unique_name("anp")
    r = anp(
        "ping", "10.0.0.1", "-c", "3", "-i", "0.05", "--netns", ns,
        "--tap", "anpt" + secrets.token_hex(3),
    )  # fmt: skip
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("bytes from 10.0.0.1: icmp_seq=") == 3
        assert "3 packets transmitted, 3 received, 0% packet loss" in r.stdout
        assert "rtt min/avg/max/mdev = " in r.stdout
    finally:
        if Netns(ns).exists():
            Netns(ns).delete()
    assert ns not in namespaces()


def test_anp_ping_to_a_silent_address_exits_1():
    ns = unique_name("anp")
    r = anp(
        "ping", "10.0.0.99", "-c", "2", "-i", "0", "-W", "0.3", "--netns", ns,
        "--tap", "anpt" + secrets.token_hex(3),
    )  # fmt: skip
    try:
        assert r.returncode == 1, r.stdout + r.stderr
        assert "2 packets transmitted, 0 received, 100% packet loss" in r.stdout
    finally:
        if Netns(ns).exists():
            Netns(ns).delete()


def test_demo_prints_its_table():
    before = {n for n in namespaces() if n.startswith("anp-demo-")}
    r = anp("demo", timeout=100)
    assert r.returncode == 0, r.stdout + r.stderr
    for mode in ("interrupt", "coalesce", "poll", "adaptive"):
        assert mode in r.stdout
    assert "arping replies" in r.stdout and "5/5" in r.stdout and "20/20" in r.stdout
    assert {n for n in namespaces() if n.startswith("anp-demo-")} == before


def test_demo_on_the_wire():
    r = anp("demo", "--wire", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "in-memory wire" in r.stdout and "20/20" in r.stdout


# -- the reference application (needs TCP on the stack) ------------------------------------

_KERNEL_CLIENT = """
import asyncio, sys
from anp_async.apps.echo import echo_client
async def main():
    res = await echo_client(lambda: asyncio.open_connection('10.0.0.2', 7000), 1 << 20, 2,
                            timeout=30)
    print([r.ok for r in res], [r.error for r in res])
    return all(r.ok for r in res)
sys.exit(0 if asyncio.run(main()) else 1)
"""

_KERNEL_SERVER = """
import asyncio
from anp_async.apps.echo import echo_handler
async def main():
    server = await asyncio.start_server(echo_handler, '10.0.0.1', 7001)
    print('ready', flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def test_echo_server_on_stack_kernel_client():
    p = UpProcess("7000", cmd="echo-server")
    try:
        p.wait_ready()
        r = subprocess.run(
            ["ip", "netns", "exec", p.ns, sys.executable, "-c", _KERNEL_CLIENT],
            capture_output=True, text=True, timeout=60, env=ENV,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(15) == 0
        assert p.output().count("1048576 bytes ok") == 2, p.output()
    finally:
        p.stop()


def test_echo_client_on_stack_kernel_server():
    ns = unique_name("anp")
    tap = "anpt" + secrets.token_hex(3)
    # The namespace must exist before the kernel server can listen in it, so anp runs
    # without --netns here, inside the namespace we made.
    with Netns.create(ns) as netns:
        server = netns.popen(
            [sys.executable, "-c", _KERNEL_SERVER.replace("'10.0.0.1'", "'0.0.0.0'")],
            stdout=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        try:
            assert server.stdout.readline().strip() == "ready"
            r = netns.run(
                [*ANP, "echo-client", "10.0.0.1", "7001", "--size", "1M", "--count", "3",
                 "--tap", tap],
                timeout=90, env=ENV,
            )  # fmt: skip
            assert r.returncode == 0, r.stdout + r.stderr
            assert r.stdout.count("1048576 bytes ok") == 3
            assert "3/3 echoes matched" in r.stdout
        finally:
            server.kill()
            server.wait()
    assert ns not in namespaces()
