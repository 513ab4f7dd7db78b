"""Stack loops without root: ``anp_async.install`` on two stacks joined by the in-memory wire.

Plain asyncio calls (``asyncio.start_server``, ``open_connection``, ``create_datagram_endpoint``,
TLS with ``ssl=``, ``start_tls``), an aiohttp server and client, the routing rule (names,
loopback, kernel sockets), and ``anp run``'s handling of the program it runs.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from anp_async.cli import CliError
from anp_async.cli.run_inprocess import parse_program
from anp_async.install import install, installed
from anp_async.transport.loop import KERNEL, STACK, StackLoopMixin, parse_host_map
from tests.stackutil import ALL_MODES, wire_stacks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tls() -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """(server context, client context trusting it) for a self-signed cert on 10.0.0.1."""
    with tempfile.TemporaryDirectory(prefix="anp-tls-") as d:
        cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
             "-days", "1", "-subj", "/CN=anp-test", "-addext", "subjectAltName=IP:10.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cert, key)
        client = ssl.create_default_context(cafile=cert)
        yield server, client


async def _reverse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read()
    writer.write(data[::-1])
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _reverse_sized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # TLS transports cannot write_eof(): a length prefix marks the end instead.
    n = int.from_bytes(await reader.readexactly(4), "big")
    writer.write((await reader.readexactly(n))[::-1])
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def _sized(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


@pytest.mark.parametrize("mode", ALL_MODES)
async def test_streams_and_sockets_through_installed_stacks(mode: str) -> None:
    payload = os.urandom(300_000)
    async with wire_stacks(mode) as (a, b):
        loop = asyncio.get_running_loop()
        with installed(a) as inst:
            assert isinstance(loop, StackLoopMixin) and inst.loop is loop
            server = await asyncio.start_server(_reverse, "0.0.0.0", 7000)
        assert not isinstance(loop, StackLoopMixin)  # uninstalled: the class is restored
        assert [s.getsockname() for s in server.sockets] == [("10.0.0.1", 7000)]
        with installed(b):
            reader, writer = await asyncio.open_connection("10.0.0.1", 7000)
            sock = writer.get_extra_info("socket")
            assert (sock.family, sock.type) == (socket.AF_INET, socket.SOCK_STREAM)
            assert sock.getpeername() == ("10.0.0.1", 7000)
            assert sock.getsockname()[0] == "10.0.0.2"
            # asyncio's sockets have Nagle off; the stack loop's connections too.
            assert writer.transport._conn.cfg.nodelay is True
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            cfg = writer.transport._conn.cfg
            assert (cfg.nodelay, cfg.keepalive) == (False, True)
            writer.write(payload)
            writer.write_eof()
            assert await reader.read() == payload[::-1]
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()


async def test_udp_and_names_through_installed_stack() -> None:
    async with wire_stacks() as (a, b):
        loop = asyncio.get_running_loop()
        got: asyncio.Future[tuple[bytes, tuple[str, int]]] = loop.create_future()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                self.transport.sendto(data.upper(), addr)  # type: ignore[attr-defined]

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                got.set_result((data, addr))

        with installed(a):
            server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 5353))
        with installed(b):
            client, _ = await loop.create_datagram_endpoint(Client, remote_addr=("10.0.0.1", 5353))
            client.sendto(b"hello")
            assert await asyncio.wait_for(got, 5) == (b"HELLO", ("10.0.0.1", 5353))
            client.close()

            infos = await loop.getaddrinfo("10.0.0.1", "http", type=socket.SOCK_STREAM)
            assert infos == [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 80))]
            infos = await loop.getaddrinfo("localhost", 53)  # /etc/hosts, no DNS
            assert {i[4] for i in infos} == {("127.0.0.1", 53)}
            assert await loop.getnameinfo(("10.0.0.1", 80), socket.NI_NUMERICHOST) == (
                "10.0.0.1",
                "http",
            )
            with pytest.raises(socket.gaierror, match="only numeric addresses and /etc/hosts"):
                await asyncio.open_connection("needs-dns.example", 80)
            # a stack without IPv6 answers as a kernel without a route does
            with pytest.raises(OSError) as exc:
                await asyncio.open_connection("2001:db8::1", 80)
            assert exc.value.errno == errno.ENETUNREACH
            with pytest.raises(socket.gaierror, match="not of the family"):
                await loop.getaddrinfo("10.0.0.1", 80, family=socket.AF_INET6)
            infos = await loop.getaddrinfo("fd00::1", 7, type=socket.SOCK_STREAM)
            assert infos == [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::1", 7, 0, 0))]
        server.close()


async def test_routing_rule_and_kernel_sockets() -> None:
    async with wire_stacks() as (_a, b):
        loop = asyncio.get_running_loop()
        with installed(b, host_map={"127.0.0.1": "10.0.0.1", "db": "10.0.0.9"}) as inst:
            lp = inst.loop
            assert isinstance(lp, StackLoopMixin)
            route = lp._anp_route
            assert route("10.0.0.1", passive=False, what="t") == (STACK, "10.0.0.1")
            assert route("127.0.0.1", passive=False, what="t") == (STACK, "10.0.0.1")  # mapped
            assert route("DB", passive=False, what="t") == (STACK, "10.0.0.9")
            assert route("127.0.0.2", passive=False, what="t") == (KERNEL, "127.0.0.2")
            assert route("::1", passive=False, what="t") == (KERNEL, "::1")
            assert route(None, passive=True, what="t") == (STACK, "0.0.0.0")
            assert route("::", passive=True, what="t") == (STACK, "::")
            assert route("fd00::1", passive=False, what="t") == (STACK, "fd00::1")
            # Kernel sockets cannot reach the stack's network: a clear error, not a hang.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setblocking(False)
                with pytest.raises(NotImplementedError, match="cannot reach the stack"):
                    await loop.sock_sendto(s, b"x", ("10.0.0.1", 9))
                with pytest.raises(NotImplementedError, match="cannot reach the stack"):
                    await loop.sock_recv(s, 10)
            # Unix sockets never touch the network: they stay with the kernel.
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "s")
                srv = await asyncio.start_unix_server(_reverse, path)
                r, w = await asyncio.open_unix_connection(path)
                w.write(b"abc")
                w.write_eof()
                assert await r.read() == b"cba"
                w.close()
                srv.close()
                await srv.wait_closed()
        with pytest.raises(RuntimeError, match="already routes"):
            with installed(b):
                install(b)


async def test_sock_connect_then_create_connection_adopts() -> None:
    """aiohttp's pattern (aiohappyeyeballs): kernel socket, sock_connect, create_connection(sock=)."""
    async with wire_stacks() as (a, b):
        loop = asyncio.get_running_loop()
        with installed(a):
            server = await asyncio.start_server(_reverse, "10.0.0.1", 7001)
        with installed(b):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("10.0.0.1", 7001))
            with pytest.raises(NotImplementedError, match="lives on the stack"):
                await loop.sock_sendall(sock, b"x")
            reader, writer = await asyncio.open_connection(sock=sock)
            assert sock.fileno() == -1  # the kernel socket was only a handle: closed
            writer.write(b"adopted")
            writer.write_eof()
            assert await reader.read() == b"detpoda"
            writer.close()
            await writer.wait_closed()
        server.close()


@pytest.mark.parametrize("mode", ["interrupt", "poll"])
async def test_tls_and_start_tls_over_the_stack(
    mode: str, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_ctx, client_ctx = tls
    payload = os.urandom(200_000)
    async with wire_stacks(mode) as (a, b):

        async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"OK\n")
            await writer.drain()
            await writer.start_tls(server_ctx)
            await _reverse_sized(reader, writer)

        with installed(a):
            tls_server = await asyncio.start_server(_reverse_sized, "0.0.0.0", 443, ssl=server_ctx)
            plain_server = await asyncio.start_server(upgrade, "0.0.0.0", 25)
        with installed(b):
            reader, writer = await asyncio.open_connection("10.0.0.1", 443, ssl=client_ctx)
            assert writer.get_extra_info("peercert")["subjectAltName"] == (
                ("IP Address", "10.0.0.1"),
            )
            writer.write(_sized(payload))
            assert await reader.read() == payload[::-1]
            writer.close()
            await writer.wait_closed()

            reader, writer = await asyncio.open_connection("10.0.0.1", 25)
            writer.write(b"STARTTLS\n")
            assert await reader.readline() == b"OK\n"
            await writer.start_tls(client_ctx)
            assert writer.get_extra_info("sslcontext") is client_ctx
            writer.write(_sized(b"secret"))
            assert await reader.read() == b"terces"
            writer.close()
            await writer.wait_closed()

            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection("10.0.0.1", 443, ssl=ssl.create_default_context())
        tls_server.close()
        plain_server.close()


async def test_aiohttp_server_and_client_on_two_stacks() -> None:
    from aiohttp import ClientSession, web

    body = os.urandom(2_000_000)

    async def digest(request: web.Request) -> web.Response:
        return web.Response(text=hashlib.sha256(await request.read()).hexdigest())

    app = web.Application(client_max_size=8_000_000)
    app.router.add_post("/", digest)
    runner = web.AppRunner(app)
    await runner.setup()
    async with wire_stacks() as (a, b):
        with installed(a):
            site = web.TCPSite(runner, "0.0.0.0", 8080)
            await site.start()
        with installed(b):
            async with ClientSession() as session:
                async with session.post("http://10.0.0.1:8080/", data=body) as resp:
                    assert resp.status == 200
                    assert await resp.text() == hashlib.sha256(body).hexdigest()
        await runner.cleanup()


def test_install_on_uvloop() -> None:
    import uvloop

    async def main() -> bytes:
        async with wire_stacks() as (a, b):
            with installed(a):
                server = await asyncio.start_server(_reverse, "0.0.0.0", 7002)
            with installed(b):
                assert type(asyncio.get_running_loop()).__mro__[2] is uvloop.Loop
                reader, writer = await asyncio.open_connection("10.0.0.1", 7002)
                writer.write(b"uvloop")
                writer.write_eof()
                data = await reader.read()
                writer.close()
            server.close()
            return data

    assert uvloop.run(main()) == b"poolvu"


# -- anp run's handling of the program ---------------------------------------------------


def test_parse_program() -> None:
    p = parse_program(["--", "python3", "-u", "-m", "http.server", "8000"])
    assert (p.kind, p.target, p.args, p.unbuffered) == ("module", "http.server", ["8000"], True)
    p = parse_program(["/usr/bin/python3.11", __file__, "a", "-b"])
    assert (p.kind, p.target, p.args, p.interpreter) == (
        "script",
        __file__,
        ["a", "-b"],
        "/usr/bin/python3.11",
    )
    assert parse_program(["python", "-c", "pass", "x"]).kind == "code"
    for bad in ([], ["python"], ["python", "-X", "dev", "a.py"], ["python", "nonexistent.py"]):
        with pytest.raises(CliError):
            parse_program(bad)
    assert parse_host_map(["127.0.0.1=10.0.0.1", "LocalHost=10.0.0.1"]) == {
        "127.0.0.1": "10.0.0.1",
        "localhost": "10.0.0.1",
    }
    with pytest.raises(ValueError):
        parse_host_map(["127.0.0.1=not-an-address"])


def test_anp_run_runs_the_program_as_python_would() -> None:
    """No network call: the stack never comes up, so this needs no root."""
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "prog.py")
        with open(script, "w") as f:
            f.write(
                "import asyncio, os, sys\n"
                "print(__name__, sys.argv, sys.path[0] == os.path.dirname(__file__))\n"
                "print(type(asyncio.new_event_loop()).__name__)\n"
                "sys.exit(3)\n"
            )
        r = subprocess.run(
            [sys.executable, "-m", "anp_async", "run", "--inprocess", "--", "python", script, "x", "--y"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
        assert r.returncode == 3, r.stderr
        assert r.stdout.splitlines() == [
            f"__main__ {[script, 'x', '--y']} True",
            "StackSelectorEventLoop",
        ]
        r = subprocess.run(
            [sys.executable, "-m", "anp_async", "run", "--loop", "uvloop", "--",
             "python3", "-c", "import asyncio, sys; print(sys.argv, "
             "type(asyncio.new_event_loop()).__name__); raise ValueError('boom')", "arg"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
        assert r.returncode == 1
        assert r.stdout.strip() == "['-c', 'arg'] StackUVLoop"
        assert r.stderr.rstrip().endswith("ValueError: boom")
        assert "runner.py" not in r.stderr  # the traceback is the program's, not anp's
        r = subprocess.run(
            [sys.executable, "-m", "anp_async", "run", "--"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
        assert r.returncode == 2 and "no program given" in r.stderr
