"""Addresses and names shared by the namespace/TAP tests (importable: ``tests.netutil``)."""

from __future__ import annotations

import os
import socket

#: TAP created by the ``tap_pair`` fixture, inside the test's own namespace.
TAP_NAME = "anptap0"
#: The kernel's end of the TAP.
KERNEL_IP = "10.0.0.1"
#: The address the stack under test uses on the TAP.
STACK_IP = "10.0.0.2"
PREFIX_LEN = 24
KERNEL_CIDR = f"{KERNEL_IP}/{PREFIX_LEN}"
STACK_CIDR = f"{STACK_IP}/{PREFIX_LEN}"
#: A locally administered MAC for the stack side.
STACK_MAC = bytes.fromhex("020000000002")


def is_root() -> bool:
    return os.geteuid() == 0


def echo_round(s: socket.socket, msg: bytes) -> bytes:
    """Send ``msg`` on a blocking socket and read until as many bytes came back (or EOF)."""
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(len(msg) - len(got))
        if not chunk:
            break
        got += chunk
    return got


#: A kernel-side program (``python3 -c CONNECT_PROBE HOST PORT``) that prints what its
#: connect() meets: ``connected``, ``refused``, or the name of another OSError.
CONNECT_PROBE = """
import socket, sys
h = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET)
s.settimeout(3)
try:
    s.connect((h, int(sys.argv[2])))
    print("connected")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print(type(e).__name__)
"""
