"""Faults the way the kernel reports them, to a C program on the stack (issue 9, item 5).

``tests/apps/faults/probe.c`` prints one line per call with its result or errno name. The
kernel side makes the fault: a server that resets (SO_LINGER 0), a port nftables drops, an
address nobody answers ARP for, and an ``anp up`` stack that is killed under the program.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from anp_async.control import socket_path
from anp_async.nic.netns import Netns
from anp_async.preload.launch import api_socket_path
from tests.preloadutil import (
    KERNEL_IP,
    Proc,
    anp_up,
    attached,
    describe,
    kernel_proc,
    run_on_stack,
    tcp_stats,
)

pytestmark = [pytest.mark.root]

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE_SRC = os.path.join(HERE, "..", "apps", "faults", "probe.c")

#: A kernel server in the namespace: accepts, reads a byte, then resets (or echoes).
KERNEL_SERVER = """
import socket, struct, sys
how, port = sys.argv[1], int(sys.argv[2])
srv = socket.create_server(("0.0.0.0", port))
print("listening", flush=True)
while True:
    s, _ = srv.accept()
    data = s.recv(100)
    if how == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    elif how == "echo":
        s.sendall(data)
        s.recv(100)
        s.close()
    else:  # hold: keep it open
        s.recv(100)
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("probe") / "probe")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", out, PROBE_SRC], check=True)
    return out


def _lines(r: subprocess.CompletedProcess[str]) -> list[str]:
    return r.stdout.splitlines()


def test_reset_gives_econnreset_once_then_epipe_without_sigpipe(
    netns: Netns, probe: str
) -> None:
    with kernel_proc(netns, ["python3", "-u", "-c", KERNEL_SERVER, "reset", "7001"]):
        r = run_on_stack(netns, [probe, "reset", KERNEL_IP, "7001"], mode="interrupt")
    assert r.returncode == 0, describe(r)
    assert _lines(r) == [
        "connected",
        "send: 1",
        "read1: ECONNRESET",
        "read2: 0",
        "send-nosignal: EPIPE",
        "alive",
    ], describe(r)


def test_nonblocking_connect_einprogress_pollout_so_error_eagain(
    netns: Netns, probe: str
) -> None:
    with kernel_proc(netns, ["python3", "-u", "-c", KERNEL_SERVER, "echo", "7002"]):
        r = run_on_stack(netns, [probe, "nonblock", KERNEL_IP, "7002"], mode="adaptive")
    assert r.returncode == 0, describe(r)
    assert _lines(r) == [
        "connect: EINPROGRESS",
        "recv-connecting: EAGAIN",
        "poll: 1",
        "so_error: OK",
        "recv-idle: EAGAIN",
        "send: 5",
        "poll-in: 1",
        "recv: 5",
    ], describe(r)


def test_ehostunreach_and_etimedout(netns: Netns, probe: str) -> None:
    rules = "table inet anpdrop {\n chain input {\n type filter hook input priority 0;\n" \
            " tcp dport 7003 drop\n }\n}\n"  # fmt: skip
    rc = subprocess.run(["ip", "netns", "exec", netns.name, "nft", "-f", "-"], input=rules,
                        text=True, capture_output=True)  # fmt: skip
    assert rc.returncode == 0, rc.stderr
    script = f"{probe} connect 10.0.0.99 7003; {probe} connect {KERNEL_IP} 7003 1500"
    r = run_on_stack(netns, ["sh", "-c", script], mode="poll")
    assert r.returncode == 0, describe(r)
    # no ARP answer for .99 (like the kernel after its ARP retries); the dropped SYNs run
    # into the program's TCP_USER_TIMEOUT (1.5 s), set before connect().
    assert _lines(r) == ["connect: EHOSTUNREACH", "connect: ETIMEDOUT"], describe(r)


def test_stack_going_away_gives_reset_and_epipe_never_a_hang(probe: str) -> None:
    with anp_up() as (ns, tap, up):
        with kernel_proc(ns, ["python3", "-u", "-c", KERNEL_SERVER, "hold", "7004"]):
            prog: Proc = attached(tap, [probe, "hold", KERNEL_IP, "7004"])
            try:
                prog.wait_for("connected")
                up.p.send_signal(signal.SIGKILL)  # the stack vanishes, mid-connection
                assert prog.wait(20) == 0, prog.text()
                out = prog.stdout().decode().splitlines()
            finally:
                prog.close()
                # SIGKILL left the stack's sockets behind: remove them (a later `anp up`
                # on another TAP of the same name would find them stale).
                for path in (socket_path(tap), api_socket_path(tap)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
    assert out[0] == "connected", out
    assert out[1] in ("read: ECONNRESET", "read: 0"), out
    assert out[2:] == ["send-nosignal: EPIPE", "alive"], out


CLOSE_WHILE_CONNECTING = (
    "import socket, time; s = socket.socket(); s.setblocking(False); "
    "print('connect', s.connect_ex(('10.0.0.99', 80)), flush=True); s.close(); "
    "print('closed', flush=True); time.sleep(5)"
)


def test_close_during_connect_ends_the_connection_at_once() -> None:
    """close() in SYN-SENT (10.0.0.99 never answers ARP, which gives up after 3 s): the
    stack forgets the connection as the kernel does, not when ARP gives up."""
    with anp_up() as (_ns, tap, _up):
        prog = attached(tap, ["python3", "-c", CLOSE_WHILE_CONNECTING])
        try:
            prog.wait_for("closed")
            deadline = time.monotonic() + 1.0
            while True:
                left = [c for c in tcp_stats(tap)["connections"] if c["remote"] == "10.0.0.99:80"]
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert prog.p.poll() is None, prog.text()  # still asleep: the close did it
            out = prog.text()
        finally:
            prog.close()
    assert "connect 115" in out, out  # EINPROGRESS
    assert left == [], left
