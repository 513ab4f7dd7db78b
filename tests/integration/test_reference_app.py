"""The course's reference application in every direction, with real kernel-side clients.

- kernel ``nc`` -> ``anp echo-server`` on the stack (a framed, patterned buffer; the echo
  must come back byte for byte);
- kernel ``curl`` -> the tiny HTTP responder of ``anp up --http`` (GET a pattern,
  POST a body and get it back), checked by sha256;
- stack ``anp echo-client`` -> a kernel-side echo server, 64 MiB;
(Python-socket clients, and stack <-> stack on the wire, are in test_cli.py and
test_echo_app.py.)
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys

import pytest

from anp_async.apps.echo import HEADER, pattern_bytes
from anp_async.nic.netns import Netns, unique_name
from tests.integration.test_cli import ANP, ENV, UpProcess, namespaces

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]


def test_nc_against_the_stack_echo_server(tmp_path) -> None:
    size = 3 * 1024 * 1024
    request = HEADER.pack(size) + pattern_bytes(size)
    req_file = tmp_path / "request.bin"
    req_file.write_bytes(request)
    p = UpProcess("7000", cmd="echo-server")
    try:
        p.wait_ready()
        r = subprocess.run(
            ["ip", "netns", "exec", p.ns, "sh", "-c",
             f"nc -N -w 20 10.0.0.2 7000 < {req_file} | sha256sum"],
            capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] == hashlib.sha256(request).hexdigest()
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(15) == 0
        assert f"{size} bytes ok" in p.output(), p.output()
    finally:
        p.stop()


def test_curl_against_the_tiny_http_responder(tmp_path) -> None:
    body = pattern_bytes(5 * 1024 * 1024)[::-1]
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(body)
    p = UpProcess("--http", "8080")
    try:
        p.wait_ready()
        n = 8 * 1024 * 1024
        r = subprocess.run(
            ["ip", "netns", "exec", p.ns, "sh", "-c",
             f"curl -sS --fail --max-time 60 http://10.0.0.2:8080/pattern/{n} | sha256sum"],
            capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] == hashlib.sha256(pattern_bytes(n)).hexdigest()
        r = subprocess.run(
            ["ip", "netns", "exec", p.ns, "sh", "-c",
             f"curl -sS --fail --max-time 60 --data-binary @{body_file} "
             "-H 'Content-Type: application/octet-stream' http://10.0.0.2:8080/echo | sha256sum"],
            capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] == hashlib.sha256(body).hexdigest()
        r = subprocess.run(
            ["ip", "netns", "exec", p.ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             "--max-time", "10", "http://10.0.0.2:8080/nothing-here"],
            capture_output=True, text=True, timeout=30)  # fmt: skip
        assert r.stdout == "404"
    finally:
        p.stop()


_KERNEL_ECHO = """
import asyncio
from anp_async.apps.echo import echo_handler
async def main():
    server = await asyncio.start_server(echo_handler, '0.0.0.0', 7001)
    print('ready', flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""


def test_stack_client_64mib_against_a_kernel_server() -> None:
    ns = unique_name("anp")
    with Netns.create(ns) as netns:
        server = netns.popen(
            [sys.executable, "-c", _KERNEL_ECHO], stdout=subprocess.PIPE, text=True, env=ENV
        )
        try:
            assert server.stdout.readline().strip() == "ready"
            r = netns.run(
                [
                    *ANP,
                    "echo-client",
                    "10.0.0.1",
                    "7001",
                    "--size",
                    "64M",
                    "--count",
                    "1",
                    "--tap",
                    "anpref0",
                    "--mode",
                    "adaptive",
                ],
                timeout=240,
                env=ENV,
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert "1/1 echoes matched, 67108864 bytes each" in r.stdout, r.stdout
            print(r.stdout)
        finally:
            server.kill()
            server.wait()
    assert ns not in namespaces()
