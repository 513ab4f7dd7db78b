"""Stack sockets survive exec(): an inetd-style server hands an accepted connection to a
new program image, which still finds it is a TCP socket with a peer (issue 9).

socat (``TCP4-LISTEN:…,fork`` + ``EXEC:…,nofork``) accepts on the stack, forks, puts the
connection on the child's stdin/stdout and execs Python there; the library in the new image
asks the anp process which inherited descriptors are its sockets (by inode).
"""

from __future__ import annotations

import pytest

from tests.preloadutil import KERNEL_IP, STACK_IP, describe, retry_in_ns, stack_server

pytestmark = [pytest.mark.root]

CHILD = (
    "import socket; s = socket.socket(fileno=0); "
    "print('peer', s.getpeername()[0], 'family', int(s.family), "
    "'type', int(s.type), flush=True)"
)


def test_exec_keeps_stack_sockets() -> None:
    listen = "TCP4-LISTEN:7100,reuseaddr,fork"
    program = ["socat", listen, f'EXEC:"python3 -c \\"{CHILD}\\"",nofork']
    with stack_server(program, None, mode="interrupt") as (ns, proc):
        r = retry_in_ns(ns, ["nc", "-w", "5", STACK_IP, "7100"], text=True, capture_output=True)
        assert r.returncode == 0, describe(r) + proc.text()
    assert r.stdout.strip() == f"peer {KERNEL_IP} family 2 type 1", describe(r) + proc.text()
