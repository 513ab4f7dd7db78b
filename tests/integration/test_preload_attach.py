"""Programs sharing one ``anp up`` stack through ``anp run --attach`` (issue 9).

Two programs and one port (EADDRINUSE), SO_REUSEADDR over TIME-WAIT, and programs killed
mid-connection: the stack keeps nothing of theirs (checked with ``anp stats --json``).
Every program runs in an empty network namespace of its own (``--isolate``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from tests import capps
from tests.preloadutil import (
    KERNEL_IP,
    STACK_IP,
    anp_up,
    attached,
    describe,
    kernel_proc,
    tcp_stats,
)

pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module")
def c_apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The C test programs compiled with gcc: {name: path}."""
    return capps.build(str(tmp_path_factory.mktemp("capps")))


def test_two_programs_share_a_stack_eaddrinuse(c_apps: dict[str, str]) -> None:
    tp = c_apps["tcp_pattern"]
    with anp_up() as (ns, tap, _up):
        first = attached(tap, [tp, "server", STACK_IP, "6000", "blocking", "1"])
        second = None
        try:
            first.wait_for("listening")
            second = attached(tap, [tp, "server", "0.0.0.0", "6000", "poll", "1"])
            assert second.wait(30) == 1, second.text()
            assert "bind: EADDRINUSE" in second.text(), second.text()
            r = ns.run([tp, "client", STACK_IP, "6000", "select", "20000", "2"], timeout=30)
            assert r.returncode == 0, describe(r)
            assert first.wait(20) == 0, first.text()
        finally:
            first.close()
            if second is not None:
                second.close()


ACTIVE_CLOSER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.0.0.2", 6000))
s.listen(5)
print("listening", flush=True)
c, _ = s.accept()
c.sendall(b"bye\\n")
c.close()  # the stack's side closes first: its connection goes to TIME-WAIT
s.close()
"""


def test_rebind_over_time_wait(c_apps: dict[str, str]) -> None:
    """Like the kernel: a server that closed first leaves TIME-WAIT, and the next program's
    SO_REUSEADDR bind of the same port succeeds."""
    with anp_up() as (ns, tap, _up):
        for _ in range(2):
            server = attached(tap, ["python3", "-u", "-c", ACTIVE_CLOSER])
            try:
                server.wait_for("listening")
                r = ns.run(["nc", "-w", "5", STACK_IP, "6000"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30)  # fmt: skip
                assert r.stdout == "bye\n", describe(r)
                assert server.wait(20) == 0, server.text()
            finally:
                server.close()
        states = [c["state"] for c in tcp_stats(tap)["connections"]]
        assert states == ["TIME-WAIT", "TIME-WAIT"], states


KERNEL_HOLDER = """
import socket, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "server":
    srv = socket.create_server(("0.0.0.0", port))
    print("listening", flush=True)
    s, _ = srv.accept()
else:
    s = socket.create_connection((host, port), timeout=10)
print("connected", flush=True)
s.settimeout(20)
try:
    data = s.recv(1 << 16)
    while data:
        data = s.recv(1 << 16)
    print("saw EOF", flush=True)
except ConnectionResetError:
    print("saw RST", flush=True)
s.close()
"""


def _descendant(pid: int, name: str) -> int:
    """The pid of a descendant of ``pid`` whose executable's name is ``name``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            if os.path.basename(os.readlink(f"/proc/{p}/exe")) == name:
                return p
        todo += children.get(p, [])
    raise AssertionError(f"no process {name} under {pid}")


def _no_connection_left(tap: str, port: int, local: bool) -> dict:
    """Wait until the stack has no connection on ``port`` (local or remote) except in
    TIME-WAIT and no listener on it; return the last TCP stats."""
    deadline = time.monotonic() + 15
    while True:
        tcp = tcp_stats(tap)
        side = "local" if local else "remote"
        left = [c for c in tcp["connections"]
                if c[side].endswith(f":{port}") and c["state"] != "TIME-WAIT"]  # fmt: skip
        if not left and port not in tcp["listeners"]:
            return tcp
        if time.monotonic() > deadline:
            raise AssertionError(f"connections left on the stack: {left}, {tcp['listeners']}")
        time.sleep(0.2)


def test_killed_program_leaves_no_connection(c_apps: dict[str, str]) -> None:
    """SIGKILL a client and a server (with an accepted connection) mid-connection: the
    kernel peer sees the connection end, and the stack keeps nothing of theirs."""
    tp = c_apps["tcp_pattern"]
    with anp_up() as (ns, tap, _up):
        # a client on the stack waits for an echo that never comes
        with kernel_proc(ns, ["python3", "-u", "-c", KERNEL_HOLDER, "server", "-", "5000"]) as k:
            client = attached(tap, [tp, "client", KERNEL_IP, "5000", "blocking", "1000", "1"])
            try:
                client.wait_for("connected")
                k.wait_for("connected")
                assert any(
                    c["remote"] == f"{KERNEL_IP}:5000" for c in tcp_stats(tap)["connections"]
                )
                os.kill(_descendant(client.p.pid, "tcp_pattern"), signal.SIGKILL)
                k.wait_for("saw", 20)
                client.wait(20)
            finally:
                client.close()
            _no_connection_left(tap, 5000, local=False)
        # a server on the stack with one accepted connection
        server = attached(tap, [tp, "server", STACK_IP, "6000", "blocking", "1"])
        try:
            server.wait_for("listening")
            with kernel_proc(ns, ["python3", "-u", "-c", KERNEL_HOLDER, "client", STACK_IP,
                                  "6000"], "connected") as k:  # fmt: skip
                server.wait_for(f"connected {STACK_IP}:6000")
                os.kill(_descendant(server.p.pid, "tcp_pattern"), signal.SIGKILL)
                k.wait_for("saw", 20)
                server.wait(20)
        finally:
            server.close()
        tcp = _no_connection_left(tap, 6000, local=True)
        assert tcp["open_connections"] == sum(
            c["state"] == "TIME-WAIT" for c in tcp["connections"]
        ), tcp["connections"]
