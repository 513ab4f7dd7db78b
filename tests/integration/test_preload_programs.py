"""Unmodified programs on the stack through the LD_PRELOAD library (issue 9).

Every program runs with ``anp run ... --isolate -- PROGRAM``: inside an empty network
namespace of its own (only ``lo``), so a socket call the library misses fails instead of
reaching the kernel. Its peers are the kernel on the other side of the TAP: curl, nc,
``python3 -m http.server`` and the C programs of ``tests/apps/c`` (compiled by the
``c_apps`` fixture), which check every byte and print the errno name on failure.

Clients on the stack run inside a namespace the test made first (``ip netns exec NS anp
run``: the TAP is created there, so the kernel-side server can listen before the program
starts); servers on the stack get their namespace from ``anp run --netns`` (deleted by the
test if ``anp run`` failed to). The receive mode varies with the I/O style so that every
mode carries a preloaded program at least once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from anp_async.nic.netns import Netns, loopback_up, veth_pair
from tests import capps
from tests.preloadutil import (
    KERNEL_IP,
    ROOT,
    STACK_IP,
    MiB,
    Proc,
    describe,
    kernel_proc,
    retry_in_ns,
    run_on_stack,
    stack_server,
)

pytestmark = [pytest.mark.root]

IO_STYLES = ["blocking", "select", "poll", "epoll"]
MODE_FOR = {"blocking": "interrupt", "select": "coalesce", "poll": "poll", "epoll": "adaptive"}


@pytest.fixture(scope="module")
def c_apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The C test programs compiled with gcc: {name: path}."""
    return capps.build(str(tmp_path_factory.mktemp("capps")))


# -- the C programs themselves, kernel to kernel (so a failure below is the stack's) ------


def test_c_programs_kernel_to_kernel(c_apps: dict[str, str]) -> None:
    """The same checks as below, both ends on kernel sockets over a veth."""
    tp, a, b = c_apps["tcp_pattern"], Netns.create(), Netns.create()
    try:
        veth_pair(a, b, "10.0.1.1/24", "10.0.1.2/24")
        with kernel_proc(b, [tp, "server", "0.0.0.0", "5000", "epoll", "4"]) as srv:
            for io in IO_STYLES:
                r = a.run([tp, "client", "10.0.1.2", "5000", io, "200000", "3"], timeout=30)
                assert r.returncode == 0, describe(r)
            assert srv.wait(20) == 0, srv.text()
        with kernel_proc(b, [tp, "server", "0.0.0.0", "5001", "poll", "200"]) as srv:
            r = a.run([c_apps["many_conns"], "10.0.1.2", "5001", "200", "1000"], timeout=30)
            assert r.returncode == 0 and "ok 200 connections" in r.stdout, describe(r)
            assert srv.wait(20) == 0, srv.text()
        with kernel_proc(b, [c_apps["udp_rr"], "server", "0.0.0.0", "5002", "20"]) as srv:
            r = a.run([c_apps["udp_rr"], "client", "10.0.1.2", "5002", "8000", "20"], timeout=30)
            assert r.returncode == 0, describe(r)
            assert srv.wait(20) == 0, srv.text()
        with kernel_proc(b, [c_apps["fork_test"], "accept", "0.0.0.0", "5003"]) as srv:
            r = a.run([tp, "client", "10.0.1.2", "5003", "blocking", "100000", "2"], timeout=30)
            assert r.returncode == 0, describe(r)
            assert srv.wait(20) == 0, srv.text()
        with kernel_proc(b, [c_apps["fork_test"], "prefork", "0.0.0.0", "5004", "3"]) as srv:
            clients = " & ".join([f"{tp} client 10.0.1.2 5004 epoll 50000 2"] * 3) + " & wait"
            r = a.run(["sh", "-c", clients], timeout=30)
            assert r.stdout.count("ok 2 messages") == 3, describe(r)
            assert srv.wait(20) == 0, srv.text()
        r = a.run([tp, "client", "10.0.1.2", "5999", "poll", "1", "1"], timeout=30)
        assert r.returncode == 1 and "connect: ECONNREFUSED" in r.stderr, describe(r)
    finally:
        a.delete()
        b.delete()


def _only_pollerr_differs(kernel: str, stack: str) -> bool:
    """The one documented difference: a program's stack socket is a Unix socket, which
    polls POLLERR only when its peer closes with unread data -- never for an ICMP error or
    a reset. The error itself is reported the kernel's way (recv -> ECONNREFUSED /
    ECONNRESET); the line must match apart from that bit."""
    return "POLLERR=1" in kernel and stack == kernel.replace("POLLERR=1", "POLLERR=0")


def test_socket_api_corner_cases_like_the_kernel(netns: Netns, c_apps: dict[str, str]) -> None:
    """sockprobe prints ~40 corner cases (names before connect, options, EINPROGRESS /
    EISCONN, EAGAIN, MSG_PEEK / MSG_WAITALL, writev / recvmsg, dup, EPIPE after SHUT_WR,
    UDP names ...): through the stack it must print what it prints on kernel sockets."""
    a, b = Netns.create(), Netns.create()
    try:
        veth_pair(a, b, "10.0.1.1/24", "10.0.1.2/24")
        with kernel_proc(b, [c_apps["rr_bench"], "serve", "0.0.0.0"], '"ready"'):
            kernel = a.run([c_apps["sockprobe"], "10.0.1.2", "7", "10.0.1.1"], timeout=30)
        assert kernel.returncode == 0, describe(kernel)
    finally:
        a.delete()
        b.delete()
    with kernel_proc(netns, [c_apps["rr_bench"], "serve", "0.0.0.0"], '"ready"'):
        stack = run_on_stack(netns, [c_apps["sockprobe"], KERNEL_IP, "7", STACK_IP])
    assert stack.returncode == 0, describe(stack)
    want = kernel.stdout.replace("10.0.1.2", "PEER").splitlines()
    got = stack.stdout.replace(KERNEL_IP, "PEER").splitlines()
    assert len(want) > 30
    diff = [
        f"kernel {w!r} / stack {g!r}"
        for w, g in zip(want, got, strict=False)
        if w != g and not _only_pollerr_differs(w, g)
    ]
    assert len(got) == len(want) and not diff, "\n".join(diff) + "\n" + describe(stack)


# -- the pattern client and server in every I/O style, both directions -------------------


@pytest.mark.parametrize("io", IO_STYLES)
def test_pattern_client_on_stack(io: str, netns: Netns, c_apps: dict[str, str]) -> None:
    tp = c_apps["tcp_pattern"]
    with kernel_proc(netns, [tp, "server", "0.0.0.0", "5000", io, "1"]) as srv:
        r = run_on_stack(netns, [tp, "client", KERNEL_IP, "5000", io, "300000", "4"], MODE_FOR[io])
        assert r.returncode == 0, describe(r)
        assert f"connected {STACK_IP}:" in r.stdout and f"-> {KERNEL_IP}:5000" in r.stdout
        assert "ok 4 messages of 300000 bytes" in r.stdout
        assert srv.wait(20) == 0, srv.text()
        assert "ok served 1 connections, 1200000 bytes" in srv.text()


@pytest.mark.parametrize("io", IO_STYLES)
def test_pattern_server_on_stack(io: str, c_apps: dict[str, str]) -> None:
    tp = c_apps["tcp_pattern"]
    bind = "0.0.0.0" if io in ("blocking", "poll") else STACK_IP  # both forms of bind()
    program = [tp, "server", bind, "5000", io, "2"]
    with stack_server(program, "listening", MODE_FOR[io]) as (ns, proc):
        r = retry_in_ns(ns, [tp, "client", STACK_IP, "5000", io, "300000", "4"])
        assert r.returncode == 0, describe(r)
        assert f"connected {KERNEL_IP}:" in r.stdout and f"-> {STACK_IP}:5000" in r.stdout
        r = ns.run([tp, "client", STACK_IP, "5000", "blocking", "100", "50"], timeout=30)
        assert r.returncode == 0, describe(r)
        assert proc.wait(30) == 0, proc.text()
        out = proc.text()
    assert f"connected {STACK_IP}:5000 -> {KERNEL_IP}:" in out, out
    assert "ok served 2 connections, 1205000 bytes echoed" in out, out


# -- UDP request/response ------------------------------------------------------------------


def test_udp_client_on_stack(netns: Netns, c_apps: dict[str, str]) -> None:
    u = c_apps["udp_rr"]
    with kernel_proc(netns, [u, "server", "0.0.0.0", "5000", "65"]) as srv:
        script = (f"{u} client {KERNEL_IP} 5000 1000 40 && "
                  f"{u} client {KERNEL_IP} 5000 8000 20 connect && "
                  f"{u} client {KERNEL_IP} 5000 65507 5")  # fmt: skip
        r = run_on_stack(netns, ["sh", "-c", script])
        assert r.returncode == 0, describe(r)
        assert r.stdout.count(f"bound {STACK_IP}:") == 1, r.stdout  # connect() binds the address
        assert "ok 40 datagrams of 1000 bytes" in r.stdout and "ok 20 datagrams of 8000" in r.stdout
        assert "ok 5 datagrams of 65507 bytes" in r.stdout  # the largest, 45 fragments each way
        assert srv.wait(20) == 0, srv.text()
        assert f"first request from {STACK_IP}:" in srv.text()


def test_udp_server_on_stack(c_apps: dict[str, str]) -> None:
    u = c_apps["udp_rr"]
    with stack_server([u, "server", "0.0.0.0", "5000", "60"], "listening") as (ns, proc):
        r = retry_in_ns(ns, [u, "client", STACK_IP, "5000", "1000", "40"])
        assert r.returncode == 0, describe(r)
        r = ns.run([u, "client", STACK_IP, "5000", "8000", "20", "connect"], timeout=30)
        assert r.returncode == 0, describe(r)
        assert proc.wait(20) == 0, proc.text()
        assert f"first request from {KERNEL_IP}:" in proc.text()


# -- curl, nc, Python ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def www() -> Iterator[tuple[str, dict[str, str]]]:
    """Files for kernel-side HTTP servers, and their sha256."""
    sizes = {"big.bin": 40 * MiB, "mid.bin": 3 * MiB + 17}
    with tempfile.TemporaryDirectory(prefix="anp-pl-www-") as d:
        hashes = {}
        for name, size in sizes.items():
            data = os.urandom(size)
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            hashes[name] = hashlib.sha256(data).hexdigest()
        yield d, hashes


def http_server_in(ns: Netns, directory: str) -> contextlib.AbstractContextManager[Proc]:
    argv = ["python3", "-u", "-m", "http.server", "--bind", "0.0.0.0", "--directory",
            directory, "8000"]  # fmt: skip
    return kernel_proc(ns, argv, "Serving HTTP")


def test_curl_downloads_40mib(netns: Netns, www: tuple[str, dict[str, str]]) -> None:
    directory, hashes = www
    with http_server_in(netns, directory), tempfile.TemporaryDirectory() as out:
        dest = os.path.join(out, "big.bin")
        r = run_on_stack(netns, ["curl", "-sS", "--noproxy", "*", "-m", "90", "-o", dest,
                                 "-w", "%{http_code} %{size_download}\n",
                                 f"http://{KERNEL_IP}:8000/big.bin"])  # fmt: skip
        assert r.returncode == 0, describe(r)
        assert r.stdout.split() == ["200", str(40 * MiB)], describe(r)
        with open(dest, "rb") as f:
            assert hashlib.file_digest(f, "sha256").hexdigest() == hashes["big.bin"]


def test_nc_listens_on_stack() -> None:
    data = os.urandom(MiB + 5)
    with stack_server(["nc", "-l", STACK_IP, "5000"], None) as (ns, proc), \
            tempfile.NamedTemporaryFile(prefix="anp-pl-nc-") as f:  # fmt: skip
        f.write(data)
        f.flush()
        r = retry_in_ns(ns, ["sh", "-c", f"nc -N -w 20 {STACK_IP} 5000 < {f.name}"])
        assert r.returncode == 0, describe(r)
        assert proc.wait(30) == 0, proc.text()
        got = proc.stdout()
    assert len(got) == len(data) and got == data


def test_socat_exec_cat_on_stack(c_apps: dict[str, str]) -> None:
    """socat accepts, forks and dup2()s the connection onto cat's stdin/stdout: an
    inherited stack socket used by a program that never calls the socket API at all."""
    program = ["socat", f"TCP-LISTEN:5000,bind={STACK_IP}", "EXEC:cat"]
    with stack_server(program, None) as (ns, proc):
        r = retry_in_ns(ns, [c_apps["tcp_pattern"], "client", STACK_IP, "5000", "poll",
                             "100000", "5"])  # fmt: skip
        assert r.returncode == 0, describe(r)
        assert "ok 5 messages of 100000 bytes" in r.stdout
        assert proc.wait(30) == 0, proc.text()


UDP_ECHO_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.connect((sys.argv[1], 5300))
for i in range(3):
    s.send(f"{sys.argv[2]}-{i}".encode())
    print(s.recv(100).decode())
"""


def test_socat_udp_fork_on_stack() -> None:
    """socat's UDP server with fork: the socket that got a peer's first datagram is
    connected to that peer and handed to a child running cat, and socat binds a fresh
    socket on the port (reuseaddr) for the next peer: each peer's datagrams must reach
    its own child."""
    program = ["socat", f"UDP-LISTEN:5300,bind={STACK_IP},fork,reuseaddr", "EXEC:cat"]
    with stack_server(program, None) as (ns, proc):
        for who in ("a", "b", "c"):
            r = retry_in_ns(ns, [sys.executable, "-c", UDP_ECHO_CLIENT, STACK_IP, who])
            assert r.returncode == 0, describe(r) + proc.text()
            assert r.stdout.split() == [f"{who}-{i}" for i in range(3)], describe(r)


def _probe_kernel_then_stack(
    server: str, probe: str, mode: str
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """Run the Python ``probe`` (its argument: the server's address) against the Python
    ``server`` (which prints "listening"): kernel to kernel over a veth pair, then on the
    stack (receive ``mode``) against the same server on the kernel side of the TAP."""
    a, b = Netns.create(), Netns.create()
    try:
        for ns in (a, b):
            loopback_up(ns)  # (a host's own address is reached through lo)
        veth_pair(a, b, "10.0.1.1/24", "10.0.1.2/24")
        with kernel_proc(b, [sys.executable, "-c", server]):
            k = retry_in_ns(a, [sys.executable, "-c", probe, "10.0.1.2"])
        assert k.returncode == 0, describe(k)
        with kernel_proc(a, [sys.executable, "-c", server]):
            st = run_on_stack(a, [sys.executable, "-c", probe, KERNEL_IP], mode)
        assert st.returncode == 0, describe(st)
    finally:
        a.delete()
        b.delete()
    return k, st


UDP_PROBE = """
import errno, socket, sys
peer = sys.argv[1]
def e(f):
    try:
        return f()
    except OSError as x:
        return errno.errorcode.get(x.errno, x.errno)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.bind(("0.0.0.0", 0))
print("sockname", s.getsockname()[0])
s.connect((peer, 7001))
print("connected sockname is ours", s.getsockname()[0] != "0.0.0.0")
s.send(b"hello world")
print("full", s.recv(100))
s.send(b"hello world")
print("small buf", s.recv(5))
s.send(b"hello world")
data, _, flags, _ = s.recvmsg(5)
print("recvmsg trunc", data, bool(flags & socket.MSG_TRUNC))
s.send(b"abcdef")
print("peek", s.recv(100, socket.MSG_PEEK), "then", s.recv(100))
s.send(b"abcdefgh")
print("MSG_TRUNC len", len(s.recv(2, socket.MSG_TRUNC)))
s.send(b"")
print("empty", s.recv(100))
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)
print("tos", s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS))
s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_RECVTTL", 12), 1)  # (Linux: 12)
s.send(b"ttl?")
data, anc, flags, _ = s.recvmsg(100, socket.CMSG_SPACE(4))
print("IP_RECVTTL", data, [(lv, t, int.from_bytes(d, "little")) for lv, t, d in anc])
s.send(b"ttl?")
print("no room", bool(s.recvmsg(100, 0)[2] & socket.MSG_CTRUNC))
s.send(b"header?")
print("sent with", s.recv(100))
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 5)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x28)
s.send(b"header?")
print("sent with", s.recv(100))
bc = peer.rsplit(".", 1)[0] + ".255"
print("broadcast, no SO_BROADCAST", e(lambda: s.sendto(b"x", (bc, 9))),
      e(lambda: s.sendto(b"x", ("255.255.255.255", 9))))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.settimeout(5)
print("connect to broadcast", e(lambda: b.connect((bc, 7001))))
b.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
print("broadcast with SO_BROADCAST", e(lambda: b.sendto(b"to all", (bc, 7001))))
print("its echo", e(lambda: b.recvfrom(100)[0]))
"""

UDP_ECHO_SERVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7001))
s.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL
s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
print("listening", flush=True)
while True:
    data, anc, _, addr = s.recvmsg(65535, 256)
    if data == b"header?":  # what the request's IP header carried
        got = {t: d[0] for _, t, d in anc}  # (IP_TOS = 1, IP_TTL = 2)
        data = f"ttl {got.get(2)} tos {got.get(1)}".encode()
    s.sendto(data, addr)
"""


def test_udp_corner_cases_like_the_kernel() -> None:
    """Truncation, MSG_PEEK / MSG_TRUNC, empty datagrams, IP_TOS and IP_TTL (read back, and
    in the header of what is sent), IP_RECVTTL's ancillary data (MSG_CTRUNC without room
    for it), and broadcasts: EACCES
    without SO_BROADCAST (the library checks, as the kernel refuses at once), delivered
    with it. The same program on kernel sockets and on the stack's prints the same."""
    k, st = _probe_kernel_then_stack(UDP_ECHO_SERVER, UDP_PROBE, "coalesce")
    assert "broadcast, no SO_BROADCAST EACCES EACCES" in k.stdout  # the kernel's answer
    assert "its echo b'to all'" in k.stdout, k.stdout
    assert "IP_RECVTTL b'ttl?' [(0, 2, 64)]\nno room True" in k.stdout, k.stdout
    assert "sent with b'ttl 64 tos 16'\nsent with b'ttl 5 tos 40'" in k.stdout, k.stdout
    assert st.stdout == k.stdout, (k.stdout, st.stdout)


#: The start of the probes below: the peer's address (argv[1]), and e(call): what the
#: call returned ("ok" for None) or the name of the errno it raised.
PROBE_HEAD = """
import errno, select, socket, struct, sys
peer = sys.argv[1]
def e(f):
    try:
        r = f()
        return "ok" if r is None else r
    except OSError as x:
        return errno.errorcode.get(x.errno, x.errno)
"""


CONNECT_BACK_SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7))
s.listen()
print("listening", flush=True)
while True:
    c, _ = s.accept()
    words = c.makefile().readline().split()
    if len(words) != 4:  # a probe's plain connection
        c.close()
        continue
    kind, n, host, port = words
    for i in range(int(n)):
        if kind == "tcp":  # n connections back, each sends its number and closes
            with socket.create_connection((host, int(port)), timeout=5) as back:
                back.sendall(b"%d" % i)
        else:  # n datagrams, each from a port of its own
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as back:
                back.sendto(b"%d" % i, (host, int(port)))
    c.sendall(b"done")
    c.close()
"""

TCP_BIND_PROBE = PROBE_HEAD + """
def sock(*opts):
    s = socket.socket()
    for o in opts:
        s.setsockopt(socket.SOL_SOCKET, o, 1)
    return s
RP, RA = socket.SO_REUSEPORT, socket.SO_REUSEADDR
a, b, c = sock(RP), sock(RP), sock()
print("reuseport a", e(lambda: a.bind(("0.0.0.0", 7001))), e(lambda: a.listen(64)))
print("reuseport b", e(lambda: b.bind(("0.0.0.0", 7001))), e(lambda: b.listen(64)))
print("plain c", e(lambda: c.bind(("0.0.0.0", 7001))))
d, f = sock(RA), sock(RA)
print("reuseaddr d", e(lambda: d.bind(("0.0.0.0", 7002))), e(lambda: d.listen(8)))
print("reuseaddr f beside a listener", e(lambda: f.bind(("0.0.0.0", 7002))))
g, h = sock(RA), sock(RA)
print("reuseaddr g h", e(lambda: g.bind(("0.0.0.0", 7003))), e(lambda: h.bind(("0.0.0.0", 7003))))
print("listen g h", e(lambda: g.listen(8)), e(lambda: h.listen(8)))
i, j = sock(RP), sock()
print("reuseport i, plain j", e(lambda: i.bind(("0.0.0.0", 7004))), e(lambda: j.bind(("0.0.0.0", 7004))))
# Connections to the reuseport pair: each listener accepts its share, every one arrives.
ctl = socket.create_connection((peer, 7), timeout=10)
me = ctl.getsockname()[0]
ctl.sendall(f"tcp 20 {me} 7001\\n".encode())
got = {a: [], b: []}
done = False
while not done or select.select([a, b], [], [], 0.5)[0]:
    for ls in select.select([a, b, ctl], [], [], 10)[0]:
        if ls is ctl:
            done = True
            continue
        conn, _ = ls.accept()
        conn.settimeout(5)
        got[ls].append(int(conn.recv(16)))
        conn.close()
print("reuseport accepts: all", sorted(got[a] + got[b]) == list(range(20)),
      "both", bool(got[a]) and bool(got[b]))
a.close()
print("b after a closed listening", b.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
# UDP: two SO_REUSEPORT sockets on a port; datagrams from 20 ports spread over both.
u = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
for x in u:
    x.setsockopt(socket.SOL_SOCKET, RP, 1)
    x.bind(("0.0.0.0", 7005))
ctl = socket.create_connection((peer, 7), timeout=10)
ctl.sendall(f"udp 20 {me} 7005\\n".encode())
got = {x: [] for x in u}
while sum(map(len, got.values())) < 20:
    ready = select.select(u, [], [], 10)[0]
    if not ready:
        break
    for x in ready:
        got[x].append(int(x.recv(16)))
print("udp reuseport: all", sorted(got[u[0]] + got[u[1]]) == list(range(20)),
      "both", all(got.values()))
"""


def test_tcp_bind_rules_and_reuseport_like_the_kernel() -> None:
    """Linux's bind rules (inet_csk_bind_conflict): SO_REUSEPORT sockets share a port,
    listening too, and each accepts its share of the connections (UDP sockets their
    share of the datagrams: a reuseport group); SO_REUSEADDR sockets
    share it while neither listens, and a second one cannot listen where one does. The
    stack refused the second SO_REUSEPORT listener (nginx "listen ... reuseport",
    multi-process servers) and the second SO_REUSEADDR bind. Same output on both."""
    k, st = _probe_kernel_then_stack(CONNECT_BACK_SERVER, TCP_BIND_PROBE, "interrupt")
    assert "reuseport b ok ok" in k.stdout, k.stdout
    assert "listen g h ok EADDRINUSE" in k.stdout, k.stdout
    assert "reuseport accepts: all True both True" in k.stdout, k.stdout
    assert "udp reuseport: all True both True" in k.stdout, k.stdout
    assert st.stdout == k.stdout, (k.stdout, st.stdout)


OPTION_PROBE = PROBE_HEAD + """
S, T, IP, IP6 = socket.SOL_SOCKET, socket.IPPROTO_TCP, socket.IPPROTO_IP, socket.IPPROTO_IPV6
OPTIONS = [
    ("SO_KEEPALIVE", S, socket.SO_KEEPALIVE), ("SO_REUSEADDR", S, socket.SO_REUSEADDR),
    ("SO_OOBINLINE", S, socket.SO_OOBINLINE), ("SO_ACCEPTCONN", S, socket.SO_ACCEPTCONN),
    ("SO_PROTOCOL", S, socket.SO_PROTOCOL), ("SO_DOMAIN", S, socket.SO_DOMAIN),
    ("SO_TYPE", S, socket.SO_TYPE), ("SO_PRIORITY", S, socket.SO_PRIORITY),
    ("TCP_NODELAY", T, socket.TCP_NODELAY), ("TCP_KEEPIDLE", T, 4), ("TCP_KEEPINTVL", T, 5),
    ("TCP_KEEPCNT", T, 6), ("TCP_SYNCNT", T, 7), ("TCP_LINGER2", T, 8), ("TCP_CORK", T, 3),
    ("TCP_QUICKACK", T, 12), ("TCP_USER_TIMEOUT", T, 18), ("IP_TTL", IP, socket.IP_TTL),
    ("IP_TOS", IP, socket.IP_TOS), ("IP_MTU_DISCOVER", IP, 10), ("IP_RECVERR", IP, 11),
]
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    for nm, lvl, name in OPTIONS:
        if kind == socket.SOCK_DGRAM and lvl == T:
            continue
        s = socket.socket(socket.AF_INET, kind)
        print(kind, nm, "reads", e(lambda: s.getsockopt(lvl, name)),
              "set 3000", e(lambda: s.setsockopt(lvl, name, 3000)),
              "reads", e(lambda: s.getsockopt(lvl, name)),
              "set -1", e(lambda: s.setsockopt(lvl, name, -1)),
              "reads", e(lambda: s.getsockopt(lvl, name)))
        s.close()
s = socket.socket()
print("SO_LINGER unset", s.getsockopt(S, socket.SO_LINGER, 8))
print("IP_MTU unconnected", e(lambda: s.getsockopt(IP, 14)))
s.close()
c = socket.create_connection((peer, 7), timeout=5)
print("IP_MTU connected", c.getsockopt(IP, 14), "TCP_KEEPCNT", c.getsockopt(T, 6),
      "set 200", e(lambda: c.setsockopt(T, 6, 200)), "set 5", e(lambda: c.setsockopt(T, 6, 5)),
      "reads", c.getsockopt(T, 6))
c.close()
"""


def test_socket_options_read_back_like_the_kernel() -> None:
    """Options a program sets and reads on TCP and UDP sockets: flags kept as 0/1, values
    out of range refused (EINVAL), read-only options ENOPROTOOPT, Linux's defaults before
    any set (TCP_KEEPIDLE 7200, IP_TTL 64 ...), -1 meaning the default, SO_LINGER's
    8-byte struct, IP_MTU. The stack used to keep any value as given (IP_TTL 3000 read
    back 3000) and read 0 for options never set. Same output on both."""
    k, st = _probe_kernel_then_stack(CONNECT_BACK_SERVER, OPTION_PROBE, "interrupt")
    assert "1 TCP_KEEPIDLE reads 7200 set 3000 ok reads 3000 set -1 EINVAL" in k.stdout, k.stdout
    assert "2 IP_TTL reads 64 set 3000 EINVAL reads 64 set -1 ok reads 64" in k.stdout, k.stdout
    assert "IP_MTU connected 1500 TCP_KEEPCNT 9 set 200 EINVAL set 5 ok reads 5" in k.stdout
    assert st.stdout == k.stdout, (k.stdout, st.stdout)


FULL_QUEUE_SERVER = """
import socket, time
s = socket.socket()
s.bind(("0.0.0.0", 7100))
s.listen(0)  # never accepts: once one connection waits, Linux drops every SYN
print("listening", flush=True)
time.sleep(120)
"""

SYNCNT_PROBE = """
import errno, socket, sys, time
peer = sys.argv[1]
hold = socket.create_connection((peer, 7100), timeout=5)  # fills the accept queue
time.sleep(0.3)
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, 7, 1)  # TCP_SYNCNT: one retransmission
t = time.monotonic()
try:
    s.connect((peer, 7100))
    print("connected")
except OSError as e:
    print("connect", errno.errorcode[e.errno], "after", round(time.monotonic() - t), "s")
"""


def test_tcp_syncnt_bounds_the_connect_like_the_kernel() -> None:
    """TCP_SYNCNT set before connect(): a peer that drops every SYN (a full accept queue)
    makes connect() give up after one retransmission -- ETIMEDOUT after 1 + 2 s, not
    the default six retransmissions (127 s). The stack kept the option but used its
    default."""
    k, st = _probe_kernel_then_stack(FULL_QUEUE_SERVER, SYNCNT_PROBE, "interrupt")
    assert k.stdout == "connect ETIMEDOUT after 3 s\n", k.stdout
    assert st.stdout == k.stdout, (k.stdout, st.stdout)


OWN_ADDRESS_PROBE = PROBE_HEAD + """
probe = socket.create_connection((peer, 7), timeout=5)
me = probe.getsockname()[0]  # this host's address on the link
probe.close()
listener = socket.socket()
listener.settimeout(5)
listener.bind(("0.0.0.0", 8000))
listener.listen(5)
client = socket.create_connection((me, 8000), timeout=5)
server, _ = listener.accept()
client.sendall(b"x" * 300000)
got = b""
while len(got) < 300000:
    got += server.recv(65536)
server.sendall(b"back")
print("tcp to own address", got == b"x" * 300000, client.recv(10),
      server.getpeername()[0] == me, client.getpeername() == (me, 8000))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.bind(("0.0.0.0", 8001))
v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v.sendto(b"datagram", (me, 8001))
data, addr = u.recvfrom(100)
print("udp to own address", data, addr[0] == me)
closed = socket.socket()
closed.settimeout(5)
print("closed port on own address", e(lambda: closed.connect((me, 8002))))
"""


def test_a_program_reaches_its_own_address_like_the_kernel() -> None:
    """A program on the stack that connects to the stack's own address (a server that
    calls itself, a client and a server in one ``anp run``), sends itself a datagram or
    meets a closed port there: as Linux through lo. The stack sent such frames to the
    NIC after an ARP request for its own address: connect() timed out, the datagram was
    lost, a closed port said EHOSTUNREACH."""
    k, st = _probe_kernel_then_stack(CONNECT_BACK_SERVER, OWN_ADDRESS_PROBE, "interrupt")
    assert "tcp to own address True b'back' True True" in k.stdout, k.stdout
    assert "closed port on own address ECONNREFUSED" in k.stdout, k.stdout
    assert st.stdout == k.stdout, (k.stdout, st.stdout)


EDGES_PROBE = PROBE_HEAD + """
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("udp sendto port 0", e(lambda: u.sendto(b"x", (peer, 0))))
print("udp shutdown unconnected", e(lambda: u.shutdown(socket.SHUT_WR)),
      e(lambda: u.shutdown(socket.SHUT_RD)), "recv", e(lambda: u.recv(10, socket.MSG_DONTWAIT)))
t = socket.socket()
print("tcp recv never connected", e(lambda: t.recv(1)))
print("tcp shutdown never connected", e(lambda: t.shutdown(socket.SHUT_RDWR)))
print("tcp bind listen listen", e(lambda: t.bind(("0.0.0.0", 7300))), e(lambda: t.listen(1)),
      e(lambda: t.listen(5)), "accepting", t.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
c = socket.create_connection((peer, 7), timeout=5)
print("tcp shutdown connected", e(lambda: c.shutdown(socket.SHUT_WR)), "eof", c.recv(10))
"""


def test_shutdown_and_datagram_edges_like_the_kernel() -> None:
    """shutdown() of a socket without a peer is ENOTCONN and leaves the socket usable
    (the stack took the pair's hang-up for a close: a listen() after it was EBADF); a
    datagram to port 0 is EINVAL (the stack sent it). Same output on both."""
    k, st = _probe_kernel_then_stack(CONNECT_BACK_SERVER, EDGES_PROBE, "interrupt")
    assert "tcp bind listen listen ok ok ok accepting 1" in k.stdout, k.stdout
    assert "udp sendto port 0 EINVAL" in k.stdout, k.stdout
    assert st.stdout == k.stdout, (k.stdout, st.stdout)


def test_ping_from_the_stack(netns: Netns) -> None:
    """iputils ping, unmodified: it opens a ping socket (SOCK_DGRAM, IPPROTO_ICMP), which
    the stack serves (before, it fell back to a raw socket in the program's empty
    namespace and lost every ping); the TTL it prints comes from IP_RECVTTL."""
    r = run_on_stack(netns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", KERNEL_IP])
    assert r.returncode == 0, describe(r)
    assert "3 packets transmitted, 3 received" in r.stdout, describe(r)
    assert r.stdout.count(f"bytes from {KERNEL_IP}: icmp_seq=") == 3, describe(r)
    assert "ttl=64" in r.stdout, describe(r)
    # Nobody answers 10.0.0.77 (ARP fails): ping reports the loss, as on the kernel.
    r = run_on_stack(netns, ["ping", "-c", "1", "-W", "1", "10.0.0.77"])
    assert r.returncode == 1 and "0 received" in r.stdout, describe(r)


def _iperf3(ns: Netns, *args: str) -> dict:
    """A kernel-side iperf3 client run against the stack's server; its JSON report."""
    argv = ["timeout", "40", "iperf3", "-c", STACK_IP, "-p", "5201", "-t", "1", "-J", *args]
    r = retry_in_ns(ns, argv)
    assert r.returncode == 0, describe(r)
    report = json.loads(r.stdout)
    assert "error" not in report, report["error"]
    return report


def test_iperf3_udp_server_on_stack() -> None:
    """iperf3's UDP test: for each stream the server connects the socket that took the
    stream's first datagram to the client and binds a fresh one on the same port
    (SO_REUSEADDR), so each stream's datagrams must reach their own connected socket.
    Before shared ports the second bind failed (EADDRINUSE) and iperf3 gave up."""
    program = ["iperf3", "-s", "-B", STACK_IP, "-p", "5201", "--forceflush"]
    with stack_server(program, "Server listening", "adaptive") as (ns, _proc):
        two = _iperf3(ns, "-u", "-b", "20M", "-P", "2")
        streams = [s["udp"] for s in two["end"]["streams"]]
        assert len(streams) == 2 and all(s["packets"] > 1000 for s in streams), streams
        assert two["end"]["sum"]["lost_percent"] < 5, two["end"]["sum"]
        back = _iperf3(ns, "-u", "-b", "20M", "-R")  # the stack's socket sends
        assert back["end"]["sum"]["packets"] > 1000, back["end"]["sum"]
        assert back["end"]["sum"]["lost_percent"] < 5, back["end"]["sum"]


def test_iperf3_client_on_stack(netns: Netns) -> None:
    """iperf3 as a client on the stack, sending to a kernel iperf3 server: its report of
    the sender's cwnd, RTT and retransmissions comes from getsockopt(TCP_INFO), its MSS
    from TCP_MAXSEG (before those, it warned 'Ignoring nonsense TCP MSS 0')."""
    with kernel_proc(netns, ["iperf3", "-s", "-p", "5201", "-1", "--forceflush"], "listening"):
        r = run_on_stack(netns, ["iperf3", "-c", KERNEL_IP, "-p", "5201", "-t", "1", "-J"])
    assert r.returncode == 0 and "nonsense" not in r.stderr, describe(r)
    report = json.loads(r.stdout)
    (stream,) = report["end"]["streams"]
    sender = stream["sender"]
    assert sender["bytes"] > 10 * MiB and sender["max_snd_cwnd"] >= 10 * 1448, sender
    assert 0 < sender["mean_rtt"] < 1_000_000 and sender["retransmits"] >= 0, sender
    assert report["end"]["sum_received"]["bytes"] > 10 * MiB
    # TCP_CONGESTION read into a C string buffer: NUL-padded, as from the kernel.
    assert report["end"]["sender_tcp_congestion"] == "reno", report["end"]


ECHO_SERVER = """
import socket, threading
srv = socket.create_server(("0.0.0.0", 7000))
print("listening", flush=True)
def serve(c):
    with c:
        while data := c.recv(65536):
            c.sendall(data)
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""

TCP_INFO_PROBE = """
import socket, struct, sys
s = socket.create_connection((sys.argv[1], 7000), timeout=10)
s.sendall(b"x" * 100000)
got = 0
while got < 100000:
    got += len(s.recv(65536))
raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
f = struct.unpack_from("<8B24I4Q", raw)
print(len(raw), "state", f[0], "ca", f[1], "options", f[5] & 7, "snd_mss", f[10],
      "maxseg", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG),
      "rtt>0", f[23] > 0, "cwnd>=2", f[26] >= 2, "advmss", f[27],
      "acked", f[34], "received", f[35])
short = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
print("short", len(short), short[0])
print("IP_OPTIONS", s.getsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, 40))
n = socket.socket()
n.setblocking(False)
n.connect_ex((sys.argv[1].rsplit(".", 1)[0] + ".77", 7000))  # nobody: it stays connecting
print("connecting: state", n.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)[0])
"""


TOS_SNIFFER = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.settimeout(20)
print("listening", flush=True)
seen = 0
while seen < 3:
    ip = s.recv(65535)[14:]
    hl = (ip[0] & 15) * 4
    tcp = ip[hl:]
    if ip[9] != 6 or int.from_bytes(tcp[2:4], "big") != 7002:
        continue
    if tcp[13] & 0x12 == 0x02:  # SYN without ACK: the connection's first segment
        print("syn tos", ip[1], flush=True)
    elif len(tcp) > (tcp[12] >> 4) * 4:
        print("data segment tos", ip[1], flush=True)
        seen += 1
"""

TOS_CLIENT = """
import socket, sys
for tos in (0, 0x29):  # (the ECN bits of 0x29 are the connection's, not the socket's)
    s = socket.create_connection((sys.argv[1], 7002), timeout=10)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    s.sendall(b"marked?")
    s.recv(100)
    s.close()
s = socket.socket()  # set before connect(): the SYN is marked too
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x48)
s.settimeout(10)
s.connect((sys.argv[1], 7002))
s.sendall(b"marked?")
s.recv(100)
s.close()
print("done")
"""


def test_tcp_ip_tos_marks_the_segments(netns: Netns) -> None:
    """IP_TOS on a TCP socket marks its segments with the DSCP (the ECN bits stay the
    connection's, as on Linux); a packet socket on the kernel side reads the TOS of the
    data segments that arrive. (Marked segments leave through the full header build, not
    the header templates.) Set before connect() it marks the SYN too. Before, every
    segment left with TOS 0, and then every SYN."""
    echo = [sys.executable, "-c", ECHO_SERVER.replace("7000", "7002")]
    with kernel_proc(netns, echo), \
            kernel_proc(netns, [sys.executable, "-c", TOS_SNIFFER]) as sniffer:  # fmt: skip
        r = run_on_stack(netns, [sys.executable, "-c", TOS_CLIENT, KERNEL_IP], "adaptive")
        assert r.returncode == 0 and "done" in r.stdout, describe(r)
        assert sniffer.wait(20) == 0, sniffer.text()
        out = sniffer.stdout().decode()
    assert out.count("data segment tos") == 3, out
    assert out.count("syn tos") == 3, out
    # Set after connect(): the data is marked, the SYN is not; set before: both (Linux).
    assert "data segment tos 0\n" in out and "data segment tos 40\n" in out, out
    assert out.count("syn tos 0\n") == 2 and "syn tos 72\ndata segment tos 72\n" in out, out


def test_tcp_info_and_maxseg_like_the_kernel() -> None:
    """getsockopt(TCP_INFO) gives Linux's struct tcp_info (iperf3 reads its cwnd and
    retransmissions, nginx its RTT), TCP_MAXSEG the MSS in use and IP_OPTIONS nothing:
    the same program prints the same on kernel sockets and on the stack's."""
    k, st = _probe_kernel_then_stack(ECHO_SERVER, TCP_INFO_PROBE, "poll")
    want = "232 state 1 ca 0 options 7 snd_mss 1448 maxseg 1448 rtt>0 True cwnd>=2 True"
    assert k.stdout.startswith(want), k.stdout  # (the kernel's own answer, for reference)
    assert "IP_OPTIONS b''" in k.stdout, k.stdout  # none: sshd refuses a connection with some
    assert "connecting: state 2" in k.stdout, k.stdout  # SYN-SENT
    assert st.stdout == k.stdout, (k.stdout, st.stdout)


URLLIB_CLIENT = """
import hashlib, socket, sys, urllib.request
body = urllib.request.urlopen(sys.argv[1], timeout=30).read()
print(len(body), hashlib.sha256(body).hexdigest())
s = socket.create_connection((sys.argv[2], 8000), timeout=10)
print("sockname", s.getsockname()[0])
s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)  # v4-mapped IPv6 goes to the stack too
s6.settimeout(10)
s6.connect(("::ffff:" + sys.argv[2], 8000))
print("v6 sockname", s6.getsockname()[0])
"""


def test_python_urllib_client_on_stack(netns: Netns, www: tuple[str, dict[str, str]]) -> None:
    directory, hashes = www
    with http_server_in(netns, directory):
        url = f"http://{KERNEL_IP}:8000/mid.bin"
        r = run_on_stack(netns, ["python3", "-c", URLLIB_CLIENT, url, KERNEL_IP])
    assert r.returncode == 0, describe(r)
    assert r.stdout.splitlines() == [
        f"{3 * MiB + 17} {hashes['mid.bin']}",
        f"sockname {STACK_IP}",
        f"v6 sockname ::ffff:{STACK_IP}",
    ], describe(r)


def test_asyncio_aiohttp_client_through_the_library(
    netns: Netns, www: tuple[str, dict[str, str]]
) -> None:
    """An asyncio program (aiohttp) runs as its own process on the library, like any other."""
    directory, hashes = www
    with http_server_in(netns, directory):
        urls = [f"http://{KERNEL_IP}:8000/{name}" for name in ("mid.bin", "big.bin")]
        program = [sys.executable, os.path.join(ROOT, "tests", "apps", "aiohttp_client.py"), *urls]
        r = run_on_stack(netns, program)
    assert r.returncode == 0, describe(r)
    assert r.stdout.splitlines() == [
        f"{urls[0]} 200 {3 * MiB + 17} {hashes['mid.bin']}",
        f"{urls[1]} 200 {40 * MiB} {hashes['big.bin']}",
    ], describe(r)


def test_python_http_server_on_stack(www: tuple[str, dict[str, str]]) -> None:
    directory, hashes = www
    program = ["python3", "-u", "-m", "http.server", "--bind", STACK_IP, "--directory",
               directory, "8000"]  # fmt: skip
    with stack_server(program, "Serving HTTP") as (ns, proc):
        for name in ("mid.bin", "big.bin"):
            r = ns.run(["sh", "-c", f"curl -sS -m 60 http://{STACK_IP}:8000/{name} | sha256sum"],
                       timeout=90)  # fmt: skip
            assert r.returncode == 0 and r.stdout.split()[0] == hashes[name], describe(r)
        proc.p.send_signal(signal.SIGTERM)
        proc.wait(20)
        assert '"GET /big.bin HTTP/1.1" 200' in proc.text()


SLOW_READER = """
import socket, sys, time
s = socket.create_server(("10.0.0.2", 5000))
print("listening", flush=True)
c, _ = s.accept()
time.sleep(float(sys.argv[1]))
n = 0
while b := c.recv(1 << 20):
    n += len(b)
print("received", n, flush=True)
"""


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_program_that_does_not_read_bounds_the_stack() -> None:
    """Backpressure through the library: while the program sleeps, 200 MB offered by the
    kernel stay in the kernel (the stack's window closes); the anp process does not buffer
    them. Then the program reads every byte."""
    nbytes = 200_000_000
    with stack_server(["python3", "-u", "-c", SLOW_READER, "3"], "listening") as (ns, proc):
        rss0 = _rss_kib(proc.p.pid)
        sender = ns.popen(["sh", "-c", f"head -c {nbytes} /dev/zero | nc -N {STACK_IP} 5000"])
        try:
            time.sleep(2)
            grown = _rss_kib(proc.p.pid) - rss0
            assert sender.poll() is None, "the sender finished while the program slept"
            assert sender.wait(60) == 0
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        assert proc.wait(60) == 0, proc.text()
        assert f"received {nbytes}" in proc.text(), proc.text()
    assert grown < 32 * 1024, f"anp grew by {grown} KiB while the program did not read"


# -- many connections, fork -----------------------------------------------------------------


def test_client_holds_300_connections(netns: Netns, c_apps: dict[str, str]) -> None:
    with kernel_proc(netns, [c_apps["tcp_pattern"], "server", "0.0.0.0", "5000", "epoll",
                             "300"]) as srv:  # fmt: skip
        r = run_on_stack(netns, [c_apps["many_conns"], KERNEL_IP, "5000", "300", "2000"])
        assert r.returncode == 0, describe(r)
        assert "established 300" in r.stdout and "ok 300 connections held at once" in r.stdout
        assert srv.wait(30) == 0, srv.text()


def test_server_holds_300_connections(c_apps: dict[str, str]) -> None:
    program = [c_apps["tcp_pattern"], "server", STACK_IP, "5000", "epoll", "300"]
    with stack_server(program, "listening") as (ns, proc):
        r = retry_in_ns(ns, [c_apps["many_conns"], STACK_IP, "5000", "300", "2000"])
        assert r.returncode == 0, describe(r)
        assert proc.wait(30) == 0, proc.text()
        assert "ok served 300 connections, 600000 bytes" in proc.text()


def test_threaded_server_on_stack(c_apps: dict[str, str]) -> None:
    """rr_bench serve: three listeners with blocking accept() in threads, a thread per
    connection; four kernel clients at once (64 B RR, 30 MB each way)."""
    rb = c_apps["rr_bench"]
    with stack_server([rb, "serve", STACK_IP], '"ready"') as (ns, proc):
        script = " & ".join([
            f"{rb} rr {STACK_IP} 7 64 500 50 > rr.out",
            f"{rb} bulk-send {STACK_IP} 9 30000000",
            f"{rb} bulk-recv {STACK_IP} 19 30000000",
            f"{rb} bulk-recv {STACK_IP} 19 10000000",
        ]) + " & wait"  # fmt: skip
        with tempfile.TemporaryDirectory() as d:
            r = ns.run(["sh", "-c", f"{script} && cat rr.out"], timeout=90, cwd=d)
        assert r.returncode == 0, describe(r)
        results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        assert sorted((e.get("direction", "rr"), e.get("bytes", e.get("count"))) for e in results) == [
            ("receive", 10000000), ("receive", 30000000), ("rr", 500), ("send", 30000000),
        ], describe(r)  # fmt: skip
        assert proc.p.poll() is None, proc.text()  # still serving


def test_fork_child_serves_accepted_connection(c_apps: dict[str, str]) -> None:
    """The parent accepts, forks and closes its copy; the child echoes the connection."""
    with stack_server([c_apps["fork_test"], "accept", STACK_IP, "5000"], "listening") as (ns, p):
        r = retry_in_ns(ns, [c_apps["tcp_pattern"], "client", STACK_IP, "5000", "blocking",
                             "100000", "3"])  # fmt: skip
        assert r.returncode == 0, describe(r)
        assert p.wait(20) == 0, p.text()
        assert "child served the connection" in p.text()


def test_preforked_children_accept_on_inherited_listener(c_apps: dict[str, str]) -> None:
    """The pre-forking server: four children accept on one inherited listening socket."""
    program = [c_apps["fork_test"], "prefork", STACK_IP, "5000", "4"]
    with stack_server(program, "listening") as (ns, proc):
        client = f"{c_apps['tcp_pattern']} client {STACK_IP} 5000 epoll 200000 3"
        r = ns.run(["sh", "-c", " & ".join([client] * 4) + " & wait"], timeout=60)
        assert r.stdout.count("ok 3 messages of 200000 bytes") == 4, describe(r)
        conns = {line for line in r.stdout.splitlines() if line.startswith("connected")}
        assert len(conns) == 4, describe(r)  # four connections, four client ports
        assert proc.wait(30) == 0, proc.text()
        assert "ok 4 children each served one connection" in proc.text()


def test_fork_child_writes_on_parents_connection(netns: Netns, c_apps: dict[str, str]) -> None:
    """The parent connects and forks; the child echoes and exits; the parent carries on."""
    with kernel_proc(netns, [c_apps["tcp_pattern"], "server", "0.0.0.0", "5000", "blocking",
                             "1"]) as srv:  # fmt: skip
        r = run_on_stack(netns, [c_apps["fork_test"], "connect", KERNEL_IP, "5000", "50000"])
        assert r.returncode == 0, describe(r)
        assert "child echoed 50000 bytes" in r.stdout
        assert "ok parent and child used one connection" in r.stdout
        assert srv.wait(20) == 0, srv.text()
        assert "ok served 1 connections, 100000 bytes" in srv.text()


# -- errors like the kernel's -----------------------------------------------------------------


def test_errors_like_the_kernel(netns: Netns, c_apps: dict[str, str]) -> None:
    """ECONNREFUSED from a closed port (blocking and non-blocking connect), ENETUNREACH for
    an address off the stack's network: one line each, with the errno name."""
    tp = c_apps["tcp_pattern"]
    script = "; ".join([
        f"{tp} client {KERNEL_IP} 5999 blocking 1 1; echo status=$?",
        f"{tp} client {KERNEL_IP} 5999 poll 1 1; echo status=$?",
        f"{tp} client 192.168.77.1 5999 blocking 1 1; echo status=$?",
        f"{tp} client 192.168.77.1 5999 epoll 1 1; echo status=$?",
    ])  # fmt: skip
    r = run_on_stack(netns, ["sh", "-c", script])
    assert r.returncode == 0, describe(r)
    assert r.stdout.split() == ["status=1"] * 4, describe(r)
    lines = r.stderr.splitlines()
    for want in ("connect: ECONNREFUSED", "connect: ENETUNREACH"):
        assert sum(want in line for line in lines) == 2, describe(r)


def test_isolate_catches_a_program_the_library_cannot_see(
    netns: Netns, tmp_path: pathlib.Path
) -> None:
    """The control: the same client linked statically (LD_PRELOAD cannot enter it) gets the
    empty namespace's ENETUNREACH, so the passing tests above really went through the
    library and nothing reached the stack's network by the kernel's road."""
    static = capps.compile_one("tcp_pattern", str(tmp_path / "tcp_pattern_static"), ("-static",))
    r = run_on_stack(netns, [static, "client", KERNEL_IP, "5000", "blocking", "10", "1"])
    assert r.returncode == 1, describe(r)
    assert "connect: ENETUNREACH" in r.stderr, describe(r)


def test_loopback_stays_with_the_kernel(netns: Netns, c_apps: dict[str, str]) -> None:
    """127.0.0.1 inside the program's own namespace is the kernel's loopback, not the stack."""
    tp = c_apps["tcp_pattern"]
    script = (f"{tp} server 127.0.0.1 7000 epoll 1 & sleep 0.5; "
              f"{tp} client 127.0.0.1 7000 poll 20000 3 && wait $!")  # fmt: skip
    r = run_on_stack(netns, ["sh", "-c", script])
    assert r.returncode == 0, describe(r)
    assert "connected 127.0.0.1:7000 -> 127.0.0.1:" in r.stdout, describe(r)
    assert "ok served 1 connections, 60000 bytes" in r.stdout, describe(r)
