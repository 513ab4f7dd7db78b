"""``anp run``: unmodified programs (aiohttp, the Python docs' stream examples) on the stack.

Each test runs ``anp run`` as a subprocess -- the program runs inside it, on a stack loop --
and talks to it from the kernel side of the TAP with ordinary tools (curl, python3's
http.server, small socket scripts), in every receive mode. Servers on the stack get their
namespace from ``anp run --netns`` (deleted by the test if ``anp run`` fails to); clients
on the stack run inside a namespace the test made first (``ip netns exec NS anp run``), so
the kernel-side server can be listening before the program starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from anp_async.nic.netns import Netns, unique_name
from tests.stackutil import ALL_MODES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APPS = os.path.join(ROOT, "tests", "apps")
ANP = os.path.join(os.path.dirname(sys.executable), "anp")
MiB = 1024 * 1024
STACK_IP, KERNEL_IP = "10.0.0.2", "10.0.0.1"


def stack_opts(mode: str, tap: str = "anprun0") -> list[str]:
    return ["--tap", tap, "--ip", f"{STACK_IP}/24", "--peer", f"{KERNEL_IP}/24", "--mode", mode]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = ROOT
    return env


class Proc:
    """A background process whose combined output goes to a file we can wait on."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.out = tempfile.NamedTemporaryFile("w+", prefix="anp-run-", suffix=".log")
        self.p = subprocess.Popen(
            argv, stdout=self.out, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT
        )

    def text(self) -> str:
        with open(self.out.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, marker: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.text():
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{marker!r} did not appear; output:\n{self.text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"{self.argv} did not stop; output:\n{self.text()}") from None

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.out.close()


@contextlib.contextmanager
def anp_run_server(
    mode: str, program: list[str], ready: str, extra: list[str] | None = None
) -> Iterator[tuple[Netns, Proc]]:
    """``anp run --netns NEW ... -- program``, waited on until ``ready`` is printed.

    The namespace belongs to ``anp run``; the finally still deletes it, in case the process
    died without doing so.
    """
    ns = Netns(unique_name("anp-run"))
    argv = [ANP, "run", "--netns", ns.name, *stack_opts(mode), *(extra or []), "--", *program]
    proc = Proc(argv)
    try:
        proc.wait_for(ready)
        yield ns, proc
    finally:
        proc.close()
        if ns.exists():
            ns.delete()


def anp_run_in(ns: Netns, mode: str, program: list[str], extra: list[str] | None = None,
               timeout: float = 90.0) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``python -m anp_async run`` inside ``ns`` (the TAP is created there), to completion."""
    argv = [sys.executable, "-m", "anp_async", "run", *stack_opts(mode), *(extra or []),
            "--", *program]  # fmt: skip
    return ns.run(argv, timeout=timeout, env=_env(), cwd=ROOT)


def in_ns(ns: Netns, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return ns.run(argv, timeout=timeout)


@pytest.fixture(scope="module")
def certs() -> Iterator[tuple[str, str]]:
    """A self-signed certificate (and key) for 10.0.0.1 and 10.0.0.2, made with openssl."""
    with tempfile.TemporaryDirectory(prefix="anp-certs-") as d:
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
             "-days", "1", "-subj", "/CN=anp-test",
             "-addext", f"subjectAltName=IP:{KERNEL_IP},IP:{STACK_IP}"],
            check=True, capture_output=True,
        )  # fmt: skip
        yield cert, key


@pytest.fixture(scope="module")
def www() -> Iterator[tuple[str, dict[str, str]]]:
    """A directory of files (1 KiB .. 50 MiB) and their sha256, for kernel-side servers."""
    sizes = {"small.bin": 1000, "mid.bin": 3 * MiB + 17, "big.bin": 50 * MiB}
    with tempfile.TemporaryDirectory(prefix="anp-www-") as d:
        hashes = {}
        for name, size in sizes.items():
            data = os.urandom(size)
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            hashes[name] = hashlib.sha256(data).hexdigest()
        yield d, hashes


def fetched(stdout: str) -> dict[str, tuple[int, int, str]]:
    """aiohttp_client.py's lines ``URL STATUS BYTES SHA256`` -> {file name: (status, n, hash)}."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0].startswith("http"):
            out[parts[0].rsplit("/", 1)[1]] = (int(parts[1]), int(parts[2]), parts[3])
    return out


# -- aiohttp server on the stack, curl on the kernel side -------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_aiohttp_server_get_and_10mib_post(mode: str) -> None:
    body = os.urandom(10 * MiB)
    program = ["python", os.path.join(APPS, "aiohttp_server.py"), "0.0.0.0", "8080"]
    with anp_run_server(mode, program, "Running on") as (ns, proc), \
            tempfile.NamedTemporaryFile(prefix="anp-post-") as f:  # fmt: skip
        f.write(body)
        f.flush()
        r = in_ns(ns, ["curl", "-sS", "-m", "20", f"http://{STACK_IP}:8080/"])
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"Hello from aiohttp, {KERNEL_IP}!\n"
        r = in_ns(ns, ["curl", "-sS", "-m", "60", "--data-binary", f"@{f.name}",
                       f"http://{STACK_IP}:8080/sha256"])  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        status = proc.stop(signal.SIGTERM)
        out = proc.text()
    assert status == 0, out
    assert "anp run: stack 10.0.0.2/24" in out and f"mode {mode}" in out, out
    assert "anp run: stack down" in out, out


def test_aiohttp_server_on_uvloop() -> None:
    program = ["python3", os.path.join(APPS, "aiohttp_server.py"), STACK_IP, "8080"]
    with anp_run_server("interrupt", program, "Running on", ["--loop", "uvloop"]) as (ns, proc):
        r = ns.run(["curl", "-sS", "-m", "20", f"http://{STACK_IP}:8080/bytes/1000000"],
                   text=False, capture_output=True, timeout=30)  # fmt: skip
        assert r.returncode == 0, r.stderr
        block = bytes(range(256))
        assert r.stdout == (block * (1000000 // 256 + 1))[:1000000]
        assert proc.stop() == 0
        assert "loop StackUVLoop" in proc.text()


# -- aiohttp client on the stack, python3 -m http.server on the kernel side --------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_aiohttp_client_downloads_up_to_50mib(
    mode: str, netns: Netns, www: tuple[str, dict[str, str]]
) -> None:
    directory, hashes = www
    server = Proc(["ip", "netns", "exec", netns.name, "python3", "-u", "-m", "http.server",
                   "--bind", "0.0.0.0", "--directory", directory, "8000"])  # fmt: skip
    try:
        server.wait_for("Serving HTTP")
        urls = [f"http://{KERNEL_IP}:8000/{name}" for name in hashes]
        program = ["python", os.path.join(APPS, "aiohttp_client.py"), *urls]
        r = anp_run_in(netns, mode, program)
    finally:
        server.close()
    assert r.returncode == 0, r.stdout + r.stderr
    got = fetched(r.stdout)
    sizes = {"small.bin": 1000, "mid.bin": 3 * MiB + 17, "big.bin": 50 * MiB}
    assert got == {name: (200, sizes[name], h) for name, h in hashes.items()}, r.stdout
    assert f"mode {mode}" in r.stderr


# -- the Python docs' stream echo examples, both ways --------------------------------------

KERNEL_ECHO_CLIENT = f"""
import socket
s = socket.create_connection(("{STACK_IP}", 8888), timeout=10)
s.sendall(b"Hello from the kernel!")
data = b""
while chunk := s.recv(100):
    data += chunk
print("kernel got", repr(data.decode()))
"""

KERNEL_ECHO_SERVER = """
import socket
srv = socket.create_server(("0.0.0.0", 8888))
print("kernel listening", flush=True)
conn, addr = srv.accept()
with conn:
    data = conn.recv(100)
    print("kernel echoing", repr(data.decode()), "to", addr[0], flush=True)
    conn.sendall(data)
"""


@pytest.mark.parametrize("mode", ALL_MODES)
def test_docs_echo_server_on_stack_kernel_client(mode: str) -> None:
    program = ["python", os.path.join(APPS, "echo_server.py")]
    # The example binds 127.0.0.1 (hard-coded): --map-host puts that on the stack's address.
    extra = ["--map-host", f"127.0.0.1={STACK_IP}"]
    with anp_run_server(mode, program, "Serving on", extra) as (ns, proc):
        assert f"Serving on ('{STACK_IP}', 8888)" in proc.text()
        r = in_ns(ns, ["python3", "-c", KERNEL_ECHO_CLIENT], timeout=20)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "kernel got 'Hello from the kernel!'"
        proc.wait_for("Close the connection")
        proc.stop(signal.SIGINT)
        out = proc.text()
    assert f"Received 'Hello from the kernel!' from ('{KERNEL_IP}'," in out, out
    assert "anp run: stack down" in out, out


@pytest.mark.parametrize("mode", ALL_MODES)
def test_docs_echo_client_on_stack_kernel_server(mode: str, netns: Netns) -> None:
    server = Proc(["ip", "netns", "exec", netns.name, "python3", "-u", "-c", KERNEL_ECHO_SERVER])
    try:
        server.wait_for("kernel listening")
        program = ["python3", os.path.join(APPS, "echo_client.py")]
        r = anp_run_in(netns, mode, program, ["--map-host", f"127.0.0.1={KERNEL_IP}"], 30)
        server.p.wait(10)
        kernel_out = server.text()
    finally:
        server.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "Send: 'Hello World!'",
        "Received: 'Hello World!'",
        "Close the connection",
    ]
    assert f"kernel echoing 'Hello World!' to {STACK_IP}" in kernel_out


# -- TLS: HTTPS server on the stack (curl), TLS client on the stack (python3 ssl server) ---

KERNEL_HTTPS_SERVER = """
import functools, http.server, ssl, sys
cert, key, directory = sys.argv[1:4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
httpd = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), handler)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print("kernel https listening", flush=True)
httpd.serve_forever()
"""


@pytest.mark.parametrize("mode", ALL_MODES)
def test_https_server_on_stack(mode: str, certs: tuple[str, str]) -> None:
    cert, key = certs
    body = os.urandom(MiB + 3)
    program = ["python", os.path.join(APPS, "aiohttp_server.py"), "0.0.0.0", "8443",
               "--cert", cert, "--key", key]  # fmt: skip
    with anp_run_server(mode, program, "Running on") as (ns, proc), \
            tempfile.NamedTemporaryFile(prefix="anp-post-") as f:  # fmt: skip
        f.write(body)
        f.flush()
        # --cacert, not -k: the certificate (SAN 10.0.0.2) is verified.
        r = in_ns(ns, ["curl", "-sS", "-m", "20", "--cacert", cert, f"https://{STACK_IP}:8443/"])
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"Hello from aiohttp, {KERNEL_IP}!\n"
        r = in_ns(ns, ["curl", "-sS", "-k", "-m", "60", "--data-binary", f"@{f.name}",
                       f"https://{STACK_IP}:8443/sha256"])  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        assert proc.stop() == 0, proc.text()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_tls_client_on_stack(
    mode: str, netns: Netns, certs: tuple[str, str], www: tuple[str, dict[str, str]]
) -> None:
    cert, key = certs
    directory, hashes = www
    server = Proc(["ip", "netns", "exec", netns.name, "python3", "-u", "-c",
                   KERNEL_HTTPS_SERVER, cert, key, directory])  # fmt: skip
    try:
        server.wait_for("kernel https listening")
        urls = [f"https://{KERNEL_IP}:8443/{name}" for name in ("small.bin", "mid.bin")]
        program = ["python", os.path.join(APPS, "aiohttp_client.py"), "--cafile", cert, *urls]
        r = anp_run_in(netns, mode, program)
    finally:
        server.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert fetched(r.stdout) == {
        "small.bin": (200, 1000, hashes["small.bin"]),
        "mid.bin": (200, 3 * MiB + 17, hashes["mid.bin"]),
    }, r.stdout
