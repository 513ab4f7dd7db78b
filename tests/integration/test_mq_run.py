"""Unmodified programs on a multi-queue host: ``anp run --queues N`` and ``anp run --attach``
against ``anp up --queues N`` (issue 14; anp_async/preload/siblings.py).

Each test makes its own namespace (through ``anp run --netns`` / ``anp up --netns``, or
first, for clients on the stack) with the multi-queue TAP inside; the programs run with
``--isolate``; their peers are the kernel's sockets and tools in that namespace. Which
worker serves a kernel client's flow is the steering function's choice
(``steer_queue(sport, dport, queues)``), so the tests pick source ports that land on each
worker, and read the per-worker counters from the host's control socket.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from anp_async import control
from anp_async.nic.netns import Netns, unique_name
from anp_async.nic.steering import steer_queue
from tests import capps
from tests.preloadutil import (
    ANP,
    KERNEL_IP,
    ROOT,
    STACK_IP,
    Proc,
    describe,
    env,
    kernel_proc,
    new_tap,
    stack_opts,
)

pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module")
def c_apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = str(tmp_path_factory.mktemp("capps"))
    return {n: capps.compile_one(n, os.path.join(out, n)) for n in ("tcp_pattern", "many_conns")}


@contextlib.contextmanager
def mq_server(program: list[str], ready: str, queues: int = 2) -> Iterator[tuple[Netns, str, Proc]]:
    """``anp run --netns NEW --queues N --isolate -- program``, waited on until ``ready``."""
    ns, tap = Netns(unique_name("anp-mqr")), new_tap()
    argv = [ANP, "run", "--netns", ns.name, *stack_opts(tap), "--queues", str(queues),
            "--isolate", "--", *program]  # fmt: skip
    proc = Proc(argv)
    try:
        proc.wait_for(ready, timeout=60)
        yield ns, tap, proc
    finally:
        proc.close()
        if ns.exists():
            ns.delete()


def worker_stats(tap: str) -> dict[int, dict]:
    """Each worker's stats from the host's control socket."""
    out = control.call(control.socket_path(tap), {"cmd": "stats"}, timeout=10)
    assert out["ok"], out
    return {int(i): s for i, s in out["stats"]["workers"].items()}


def ports_for(queue: int, dport: int, count: int, start: int = 20000) -> list[int]:
    """``count`` kernel source ports whose flows to ``dport`` are steered to ``queue``."""
    found = [p for p in range(start, start + 2000) if steer_queue(p, dport, 2) == queue]
    return found[:count]


ECHO_ONCE = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10, source_address=("0.0.0.0", int(sys.argv[3])))
msg = bytes(range(256)) * 64
s.sendall(msg)
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    got += d
assert got == msg, len(got)
print("ok")
"""


def echo_from(ns: Netns, port: int, sports: list[int]) -> None:
    """One echo round trip from each kernel source port (each flow on its steered worker)."""
    for sport in sports:
        r = ns.run(["python3", "-c", ECHO_ONCE, STACK_IP, str(port), str(sport)], timeout=30)
        assert r.returncode == 0 and "ok" in r.stdout, describe(r)


def test_c_server_on_two_workers_many_kernel_connections(c_apps: dict[str, str]) -> None:
    """A C epoll server under --queues 2: 64 concurrent kernel connections, every byte
    echoed and checked; both workers served some; the program's exit status is anp's."""
    server = [c_apps["tcp_pattern"], "server", "0.0.0.0", "7100", "epoll", "64"]
    with mq_server(server, "listening") as (ns, tap, proc):
        r = ns.run([c_apps["many_conns"], STACK_IP, "7100", "64", "20000"], timeout=90)
        assert r.returncode == 0 and "ok 64 connections" in r.stdout, describe(r)
        assert proc.wait(30) == 0, proc.text()  # the server ends after 64 connections
        # anp run's last line: each worker's TCP opens, read from the host as it went down.
        opens = {int(i): int(n) for i, n in re.findall(r"worker (\d) active_opens=0 "
                                                       r"passive_opens=(\d+)", proc.text())}  # fmt: skip
        assert sorted(opens) == [0, 1] and sum(opens.values()) == 64, proc.text()
        assert min(opens.values()) > 0, opens  # both workers served connections


UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("bound", flush=True)
for _ in range(int(sys.argv[2])):
    data, peer = s.recvfrom(65536)
    s.sendto(data.upper(), peer)
sys.exit(5)
"""


def test_udp_server_hears_every_worker_and_exit_status_is_kept() -> None:
    """A blocking Python UDP server under --queues 2: datagrams from kernel source ports
    steered to each worker are all answered (the sibling relays its datagrams to the
    front); the program exits 5 after them, and so does anp run."""
    sports = ports_for(0, 7200, 4) + ports_for(1, 7200, 4)
    with mq_server(["python3", "-c", UDP_SERVER, "7200", str(len(sports))], "bound") as (
        ns,
        tap,
        proc,
    ):
        with ns.enter():
            for sport in sports:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("0.0.0.0", sport))
                    s.settimeout(5)
                    s.sendto(b"hello %d" % sport, (STACK_IP, 7200))
                    assert s.recvfrom(100)[0] == b"HELLO %d" % sport
        udp = {i: w["udp"] for i, w in worker_stats(tap).items()}
        assert proc.wait(30) == 5, proc.text()
    assert all(u.get("no_port", 0) == 0 for u in udp.values()), udp
    assert udp[0]["rx_datagrams"] >= 4 and udp[1]["rx_datagrams"] >= 4, udp  # both heard


UDP_KERNEL_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7301))
print("listening", flush=True)
for _ in range(8):
    data, peer = s.recvfrom(100)
    s.sendto(data.upper(), peer)
"""

UDP_CLIENT = """
import socket, sys
for i in range(8):  # 8 sockets, 8 ports: the replies are steered to both workers
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        if i % 2:
            s.connect((sys.argv[1], 7301))
            s.send(b"u%d" % i)
            got = s.recv(100)
        else:
            s.sendto(b"u%d" % i, (sys.argv[1], 7301))
            got = s.recvfrom(100)[0]
        assert got == b"U%d" % i, got
print("udp ok")
"""


KERNEL_ECHO = """
import socket, sys, threading
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
def serve(c):
    with c:
        while d := c.recv(65536):
            c.sendall(d)
for _ in range(int(sys.argv[2])):
    threading.Thread(target=serve, args=(srv.accept()[0],)).start()
"""

BOUND_CLIENT = """
import socket, sys
host, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
for port in ports + [0]:  # bind() to a port (or to 0) before connect()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.settimeout(10)
        s.connect((host, 7303))
        assert port == 0 or s.getsockname()[1] == port, s.getsockname()
        msg = b"bound %d" % port
        s.sendall(msg)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while d := s.recv(100):
            got += d
        assert got == msg, got
print("bound ok")
"""


def test_clients_on_two_workers_curl_nc_udp(tmp_path: pathlib.Path, c_apps: dict[str, str]) -> None:
    """curl, nc, a C client with 64 connections, a UDP client and ping on the stack under
    --queues 2 reach kernel servers: the program's TCP connects take turns between the
    workers (each connects from a port steered back to itself), UDP leaves from the front
    (replies that reach the other worker are handed to it); every byte checked."""
    ns = Netns.create(unique_name("anp-mqr"))
    try:
        blob = os.urandom(1 << 20)
        (tmp_path / "blob.bin").write_bytes(blob)
        os.chmod(tmp_path, 0o755)
        http = ["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory",
                str(tmp_path)]  # fmt: skip
        with (
            kernel_proc(ns, http, ready=None),
            kernel_proc(ns, ["nc", "-d", "-l", "7300"], ready=None) as nc_srv,
            kernel_proc(ns, ["python3", "-c", UDP_KERNEL_ECHO]) as udp_srv,
            kernel_proc(
                ns, [c_apps["tcp_pattern"], "server", "0.0.0.0", "7302", "epoll", "64"]
            ) as tp_srv,  # fmt: skip
            kernel_proc(ns, ["python3", "-c", KERNEL_ECHO, "7303", "5"]) as echo_srv,
        ):
            time.sleep(0.5)
            # Ports whose replies from 7303 are steered to worker 0 and to worker 1.
            bound = ports_for(0, 7303, 2, 31000) + ports_for(1, 7303, 2, 31000)
            script = (f"curl -sS http://{KERNEL_IP}:8000/blob.bin | sha256sum && "
                      f"echo hello-nc | nc -N {KERNEL_IP} 7300 && "
                      f"{c_apps['many_conns']} {KERNEL_IP} 7302 64 20000 && "
                      f"python3 -c '{UDP_CLIENT}' {KERNEL_IP} && "
                      f"python3 -c '{BOUND_CLIENT}' {KERNEL_IP} {' '.join(map(str, bound))} && "
                      f"ping -c 3 -i 0.2 -W 2 {KERNEL_IP}")  # fmt: skip
            argv = [ANP, "run", *stack_opts(new_tap()), "--queues", "2", "--isolate", "--",
                    "sh", "-c", script]  # fmt: skip
            r = ns.run(argv, timeout=120, env=env(), cwd=ROOT)
            assert r.returncode == 0, describe(r)
            assert hashlib.sha256(blob).hexdigest() in r.stdout, describe(r)
            assert "udp ok" in r.stdout, describe(r)
            assert nc_srv.wait(20) == 0
            assert b"hello-nc" in nc_srv.stdout(), nc_srv.text()
            assert udp_srv.wait(20) == 0, udp_srv.text()
            assert "ok 64 connections" in r.stdout, describe(r)
            assert tp_srv.wait(20) == 0, tp_srv.text()
            assert "bound ok" in r.stdout, describe(r)
            # A ping socket's identifier is one the TAP steers back to its worker.
            assert "3 packets transmitted, 3 received" in r.stdout, describe(r)
            assert echo_srv.wait(20) == 0, echo_srv.text()
            # 66 unbound connects in turn, 2 bound ones steered to each worker, bind(0)'s.
            opens = [int(n) for n in re.findall(r"active_opens=(\d+)", r.stderr)]
            assert len(opens) == 2 and sum(opens) == 71 and min(opens) >= 35, describe(r)
    finally:
        ns.delete()


ECHO_SERVER = """
import socket, sys, threading
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])), backlog=64)
print("listening", flush=True)
def serve(c):
    with c:
        # Calls on an accepted socket (forwarded to the worker that serves it).
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nodelay = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        print("peer", c.getpeername()[1], "nodelay", nodelay, flush=True)
        while d := c.recv(65536):
            c.sendall(d)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def _worker_pid(tap: str, index: int) -> int:
    info = control.call(control.socket_path(tap), {"cmd": "info"}, timeout=10)
    return int(next(w["pid"] or 0 for w in info["info"]["workers"] if w["index"] == index))


def test_attach_to_anp_up_queues_and_a_worker_dying() -> None:
    """``anp run --attach`` against ``anp up --queues 2``: a blocking Python echo server is
    served by both workers; when worker 1 is killed its connection ends, worker 0 keeps
    serving, and once the supervisor restarted worker 1 the program's listener is there
    again (the front listened on it anew)."""
    ns, tap = Netns(unique_name("anp-mqr")), new_tap()
    up = Proc([ANP, "up", "--netns", ns.name, *stack_opts(tap), "--queues", "2"])
    server = None
    try:
        up.wait_for("anp up: tap", timeout=60)
        server = Proc([ANP, "run", "--attach", "--tap", tap, "--isolate", "--", "python3",
                       "-c", ECHO_SERVER, "7400"])  # fmt: skip
        server.wait_for("listening")
        on0, on1 = ports_for(0, 7400, 4), ports_for(1, 7400, 4)
        echo_from(ns, 7400, on0[:1] + on1[:1])
        for sport in (on0[0], on1[0]):  # names and options right on both workers
            assert f"peer {sport} nodelay 1" in server.text(), server.text()
        # A connection held open on worker 1 while it dies.
        with ns.enter():
            held = socket.create_connection((STACK_IP, 7400), timeout=10,
                                            source_address=("0.0.0.0", on1[1]))  # fmt: skip
        with held:
            held.sendall(b"ping")
            assert held.recv(10) == b"ping"
            old = _worker_pid(tap, 1)
            os.kill(old, signal.SIGKILL)
            echo_from(ns, 7400, on0[1:2])  # worker 0 serves on
            held.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                held.sendall(b"more")
                assert held.recv(10) == b""  # ended (EOF or reset), never echoed
        deadline = time.monotonic() + 30
        while _worker_pid(tap, 1) == old and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _worker_pid(tap, 1) != old, up.text()
        time.sleep(1.0)  # the front reaches the new worker's API and listens there
        echo_from(ns, 7400, on1[2:3] + on0[2:3])
        opens = {i: w["tcp"]["passive_opens"] for i, w in worker_stats(tap).items()}
        assert opens[0] >= 3 and opens[1] >= 1, opens  # worker 1 restarted: its own count
        assert "worker 1" in up.text() and "died" in up.text(), up.text()
        # The program ends: its listener closes on every worker (a SYN is refused there).
        server.close()
        server = None
        deadline = time.monotonic() + 10
        for sport in (on1[3], on0[3]):  # ports not used yet (no TIME-WAIT on them)
            with ns.enter():
                while True:
                    try:
                        socket.create_connection((STACK_IP, 7400), timeout=5,
                                                 source_address=("0.0.0.0", sport)).close()  # fmt: skip
                    except ConnectionRefusedError:
                        break
                    assert time.monotonic() < deadline, f"port 7400 still open (sport {sport})"
                    time.sleep(0.2)
    finally:
        if server is not None:
            server.close()
        if up.p.poll() is None:
            up.p.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                up.p.wait(20)
        up.close()
        if ns.exists():
            ns.delete()


def test_anp_run_queues_rejects_bad_counts() -> None:
    r = subprocess.run([ANP, "run", "--queues", "0", "--", "true"], capture_output=True,
                       text=True, timeout=30, env=env())  # fmt: skip
    assert r.returncode == 2 and "--queues 0" in r.stderr, describe(r)


def test_bench_preload_queues(tmp_path: pathlib.Path) -> None:
    """``anp bench preload --queues 2``: the server and the client on the stack under
    ``anp run --queues 2``, each with both workers' CPU (no speed asserted)."""
    from anp_async.bench.cli import parse_args, run_bench

    argv = ["preload", "--quick", "--count", "20", "--warmup", "2", "--bytes", "1M",
            "--rounds", "1", "--queues", "2", "--conns", "8", "--seconds", "1",
            "--out", str(tmp_path)]  # fmt: skip
    assert run_bench(parse_args(argv)) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    rows = [r for r in doc["summaries"] if r["test"] == "tcp_rr_conns"]
    assert {r["direction"] for r in rows} == {"stack-server", "stack-client"}, rows
    for r in rows:
        assert r["queues"] == 2 and r["conns"] == 8 and r["rate_rps"] > 0, r
        assert len(r["worker_cpu"]) == 2 and min(r["worker_cpu"]) > 0, r  # both worked


SLOW_ACCEPTOR = """
import socket, sys, time
n = int(sys.argv[2])
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])), backlog=1024)
print("listening", flush=True)
time.sleep(3)  # every connection of the burst waits in the accept queue meanwhile
conns = [srv.accept()[0] for _ in range(n)]
for c in conns:
    with c:
        got = b""
        while len(got) < 4000:
            got += c.recv(65536)
        c.sendall(got)
print("served", len(conns), flush=True)
"""


def test_burst_waits_in_the_accept_queue_none_lost(c_apps: dict[str, str]) -> None:
    """500 kernel connections queue up while the program does not accept (far more than
    the one-byte-per-connection signals a socketpair buffers at once, ~300): the program
    still accepts every one (on both workers) and echoes every byte."""
    with mq_server(["python3", "-c", SLOW_ACCEPTOR, "7700", "500"], "listening") as (
        ns,
        _tap,
        proc,
    ):
        r = ns.run([c_apps["many_conns"], STACK_IP, "7700", "500", "4000"], timeout=90)
        assert r.returncode == 0 and "ok 500 connections" in r.stdout, describe(r)
        assert proc.wait(30) == 0 and "served 500" in proc.text(), proc.text()
