"""IPv6 through the preload library (issues 9 and 15): programs' AF_INET6 sockets on a
dual-stack stack, with the kernel's IPv6 on the other side of the TAP.

The stack runs under ``anp up --ip 10.0.0.2/24 --ip fd00::2/64 ...``; programs attach to it
in empty namespaces of their own (``--isolate``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from anp_async.nic.netns import Netns
from tests import capps
from tests.netutil import CONNECT_PROBE
from tests.preloadutil import anp_up, attached, describe, kernel_proc

T = TypeVar("T")

pytestmark = [pytest.mark.root]

STACK6, KERNEL6 = "fd00::2", "fd00::1"


@contextlib.contextmanager
def dual_stack() -> Iterator[tuple[Netns, str]]:
    with anp_up(["--ip", f"{STACK6}/64", "--peer", f"{KERNEL6}/64"]) as (ns, tap, _proc):
        yield ns, tap


def run_attached(tap: str, program: list[str], timeout: float = 60) -> str:
    proc = attached(tap, program)
    try:
        code = proc.wait(timeout)
        out = proc.text()
    finally:
        proc.close()
    assert code == 0, out
    return out


def test_curl_6_downloads_from_a_kernel_ipv6_server() -> None:
    with tempfile.TemporaryDirectory() as d, dual_stack() as (ns, tap):
        data = os.urandom(3 << 20)
        with open(os.path.join(d, "f.bin"), "wb") as f:
            f.write(data)
        server = ["python3", "-u", "-m", "http.server", "8000", "--bind", KERNEL6, "-d", d]
        with kernel_proc(ns, server, "Serving HTTP"):
            out = os.path.join(d, "got.bin")
            run_attached(tap, ["curl", "-sS", "-g", "-o", out, f"http://[{KERNEL6}]:8000/f.bin"])
        with open(out, "rb") as f:
            assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()


def test_ping_6_from_the_stack() -> None:
    """iputils ping over IPv6, unmodified: its ICMPv6 ping socket (SOCK_DGRAM,
    IPPROTO_ICMPV6) is the stack's; the hop limit it prints comes from
    IPV6_RECVHOPLIMIT."""
    with dual_stack() as (_ns, tap):
        out = run_attached(tap, ["ping", "-c", "3", "-i", "0.2", "-W", "2", KERNEL6])
    assert "3 packets transmitted, 3 received" in out, out
    assert out.count(f"bytes from {KERNEL6}: icmp_seq=") == 3 and "ttl=64" in out, out


def test_getifaddrs_shows_the_stacks_interface(tmp_path: pathlib.Path) -> None:
    """A program that finds its addresses by enumerating interfaces (as DNS and NTP
    servers do before binding each) sees the stack's as "anp0": the IPv4 address with its
    netmask and broadcast, the IPv6 one with its prefix; binding them reaches the stack.
    Its own namespace has only lo, so before it saw nothing to serve on. hostname -I
    (which reads the same list) prints the stack's addresses."""
    exe = capps.compile_one("ifaddrs_bind", str(tmp_path / "ifaddrs_bind"))
    with dual_stack() as (_ns, tap):
        out = run_attached(tap, [exe])
        names = run_attached(tap, ["hostname", "-I"])
    assert "if anp0 10.0.0.2 mask 255.255.255.0 bcast 10.0.0.255 up 1" in out, out
    assert f"if anp0 {STACK6} mask ffff:ffff:ffff:ffff:: bcast - up 1" in out, out
    assert "bind 10.0.0.2 ok" in out and f"bind {STACK6} ok" in out, out
    assert names.split("\n")[0].split() == ["10.0.0.2", STACK6], names


DUAL_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(sys.argv[1]))
s.bind(("::", 7000)); s.listen(8)
print("listening", s.getsockname()[:2], flush=True)
for _ in range(int(sys.argv[2])):
    c, peer = s.accept()
    print("peer", peer[0], "local", c.getsockname()[0], c.recv(100).decode(), flush=True)
    c.sendall(b"ok"); c.close()
"""


V4_SERVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("0.0.0.0", 7000)); s.listen(8)
print("listening", flush=True)
c, peer = s.accept()
print("peer", peer[0], c.recv(100).decode(), flush=True)
c.sendall(b"ok"); c.close()
"""


def _kernel_client(ns: Netns, host: str) -> subprocess.CompletedProcess[str]:
    return ns.run(["sh", "-c", f"echo hi | nc -N -w 3 {host} 7000"], timeout=20)


def _kernel_connect(ns: Netns, host: str) -> str:
    """What a kernel client's connect() to port 7000 meets: connected, refused, or else."""
    return ns.run(["python3", "-c", CONNECT_PROBE, host, "7000"], timeout=20).stdout.strip()


def _serve(tap: str, program: list[str], clients: Callable[[], T]) -> tuple[str, T]:
    """Run ``program`` on the stack; once it listens, ``clients()``; then wait for it to
    exit. Returns its output and what ``clients()`` returned."""
    server = attached(tap, program)
    try:
        server.wait_for("listening")
        got = clients()
        assert server.wait(20) == 0, server.text()
        return server.text(), got
    finally:
        server.close()


def _served_both_families(ns: Netns, tap: str, program: list[str]) -> str:
    """Run ``program`` on the stack while a kernel client connects over IPv4, then one over
    IPv6; both must get "ok". Returns the program's output."""
    out, (v4, v6) = _serve(
        tap, program, lambda: (_kernel_client(ns, "10.0.0.2"), _kernel_client(ns, STACK6))
    )
    assert v4.stdout == "ok" and v6.stdout == "ok", describe(v4) + describe(v6)
    return out


def test_dual_stack_server_hears_both_families_v6only_hears_ipv6() -> None:
    with dual_stack() as (ns, tap):
        out = _served_both_families(ns, tap, ["python3", "-c", DUAL_SERVER, "0", "2"])
        assert "listening ('::', 7000)" in out, out
        assert "peer ::ffff:10.0.0.1 local ::ffff:10.0.0.2 hi" in out, out
        assert f"peer {KERNEL6} local {STACK6} hi" in out, out

        # V6ONLY: IPv4 is not this socket's -- the port is closed to it (RST to the SYN),
        # not opened and then reset
        out, (v4, v4_connect, v6) = _serve(
            tap, ["python3", "-c", DUAL_SERVER, "1", "1"],
            lambda: (
                _kernel_client(ns, "10.0.0.2"), _kernel_connect(ns, "10.0.0.2"),
                _kernel_client(ns, STACK6),
            ),
        )  # fmt: skip
        assert v4.stdout == "" and v6.stdout == "ok", describe(v4) + describe(v6)
        assert v4_connect == "refused"
        assert out.count("peer ") == 1 and f"peer {KERNEL6}" in out, out

        # an AF_INET socket: IPv6 is not its
        out, (v6, v6_connect, v4) = _serve(
            tap, ["python3", "-c", V4_SERVER],
            lambda: (
                _kernel_client(ns, STACK6), _kernel_connect(ns, STACK6),
                _kernel_client(ns, "10.0.0.2"),
            ),
        )  # fmt: skip
        assert v4.stdout == "ok" and v6.stdout == "", describe(v4) + describe(v6)
        assert v6_connect == "refused"
        assert out.count("peer ") == 1 and "peer 10.0.0.1" in out, out


#: What a dual-stack AF_INET6 socket's bind() to a port an AF_INET and an IPV6_V6ONLY
#: socket hold gets (Linux: EADDRINUSE); then the program says it is ready.
DUAL_BIND_PROBE = """
dual = socket.socket(socket.AF_INET6, socket.{kind})
try:
    dual.bind(("::", {port})); print("dual bind ok", flush=True)
except OSError as e:
    print("dual bind", errno.errorcode[e.errno], flush=True)
print("listening", flush=True)
"""

TWO_SOCKET_SERVER = """
import errno, select, socket
# A dual-stack server the way nginx's "listen 80; listen [::]:80;" is one: an AF_INET
# socket and an IPV6_V6ONLY one on the same port.
s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s4.bind(("0.0.0.0", 7000)); s4.listen(8)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s6.bind(("::", 7000)); s6.listen(8)
""" + DUAL_BIND_PROBE.format(kind="SOCK_STREAM", port=7000) + """
for _ in range(2):
    ready, _, _ = select.select([s4, s6], [], [], 20)
    for s in ready:
        c, peer = s.accept()
        name = "v6only" if s is s6 else "inet"
        print(name, "peer", peer[0], c.recv(100).decode(), flush=True)
        c.sendall(b"ok"); c.close()
"""


def test_an_inet_and_a_v6only_socket_share_a_port() -> None:
    # Linux lets them (a dual-stack AF_INET6 socket on the port then gets EADDRINUSE,
    # as this program checks on the stack); each family reaches its own socket.
    with dual_stack() as (ns, tap):
        out = _served_both_families(ns, tap, ["python3", "-c", TWO_SOCKET_SERVER])
        assert "dual bind EADDRINUSE" in out, out
        assert "inet peer 10.0.0.1 hi" in out, out
        assert f"v6only peer {KERNEL6} hi" in out, out


TWO_UDP_SOCKETS = """
import errno, select, socket
u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u4.bind(("0.0.0.0", 5300))
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); u6.bind(("::", 5300))
""" + DUAL_BIND_PROBE.format(kind="SOCK_DGRAM", port=5300) + """
got = 0
while got < 2:
    ready, _, _ = select.select([u4, u6], [], [], 20)
    if not ready:
        break
    for u in ready:
        data, peer = u.recvfrom(100)
        name = "v6only" if u is u6 else "inet"
        print(name, "from", peer[0], data.decode(), flush=True)
        u.sendto(name.encode(), peer); got += 1
"""

UDP_ASK = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
u = socket.socket(fam, socket.SOCK_DGRAM); u.settimeout(5)
u.sendto(b"q", (sys.argv[1], 5300)); print(u.recvfrom(100)[0].decode(), end="")
"""


def test_an_inet_and_a_v6only_udp_socket_share_a_port() -> None:
    with dual_stack() as (ns, tap):

        def ask(host: str) -> str:
            return ns.run(["python3", "-c", UDP_ASK, host], timeout=20).stdout

        out, (v4, v6) = _serve(
            tap, ["python3", "-c", TWO_UDP_SOCKETS], lambda: (ask("10.0.0.2"), ask(STACK6))
        )
        assert (v4, v6) == ("inet", "v6only"), out
        assert "dual bind EADDRINUSE" in out, out
        assert "inet from 10.0.0.1 q" in out and f"v6only from {KERNEL6} q" in out, out


UDP_CLIENT = f"""
import errno, socket
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"ping6", ("{KERNEL6}", 5000))
data, peer = u.recvfrom(100)
print(data.decode(), peer[0], peer[1], u.getsockname()[0], flush=True)
t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
print("unroutable", errno.errorcode[t.connect_ex(("2001:db8::1", 80))], flush=True)
"""

UDP_ECHO6 = f"""
import socket
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("{KERNEL6}", 5000))
print("listening", flush=True)
data, peer = u.recvfrom(100); u.sendto(data, peer)
"""


def test_udp_over_ipv6_and_enetunreach_off_the_network() -> None:
    with dual_stack() as (ns, tap), kernel_proc(ns, ["python3", "-u", "-c", UDP_ECHO6]):
        out = run_attached(tap, ["python3", "-c", UDP_CLIENT])
    assert f"ping6 {KERNEL6} 5000 ::" in out, out
    assert "unroutable ENETUNREACH" in out, out
