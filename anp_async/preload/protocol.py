"""The control channel between ``libanp_preload.so`` and the anp process, as bytes.

One fixed-size message per request and one per reply over a ``SOCK_SEQPACKET`` Unix socket;
a descriptor travels beside it with ``SCM_RIGHTS`` where the operation says so. The C side
is ``struct anp_msg`` in ``libanp_preload.c``: the two must change together.

=============  ===================================================  ================================
op             request                                              reply
=============  ===================================================  ================================
SOCKET         a0 type, a1/a2 inode of the program's end,           res: the socket id (sid)
               a3 family; fd: the anp end of the pair
BIND           data: sockaddr_in                                    res 0
LISTEN         a0 backlog                                           res 0
ACCEPT         --                                                   sid of the new socket, data:
                                                                    peer + local sockaddr_in; fd:
                                                                    the program's end of its pair
CONNECT        data: sockaddr_in, a0 filler bytes (TCP); no data:   res 0 = started (TCP) or done
               UDP disconnect                                       (UDP)
NAME           a0 0 = sockname, 1 = peername                        data: sockaddr_in
SETOPT         a0 level, a1 name, data[:len] value                  res 0
GETOPT         a0 level, a1 name, a2 room                           data[:len] value
EOF            --                                                   res 0 or -errno: why the
                                                                    stream ended (reset ...)
IDENTIFY       a0/a1 inode (a socket inherited across exec)         res sid, a0 type, a1 state,
                                                                    a2 family
=============  ===================================================  ================================

``res`` is ``>= 0`` or ``-errno``. Addresses are ``struct sockaddr_in`` (16 bytes); the
library converts the program's IPv6 (v4-mapped) addresses, so this side sees IPv4 only.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

#: op, sid, res, a0..a3, len, data[64] -- ``struct anp_msg``.
MSG = struct.Struct("=iii4iI64s")
DATA_MAX = 64

#: Datagram header between the two ends of a UDP socket: address, port (network order),
#: and an errno in place of a datagram (an ICMP error for a connected socket).
UDP_HDR = struct.Struct("=4s2sH")

SOCKADDR_IN = struct.Struct("=H2s4s8x")


class Op(IntEnum):
    SOCKET = 1
    BIND = 2
    LISTEN = 3
    ACCEPT = 4
    CONNECT = 5
    NAME = 6
    SETOPT = 7
    GETOPT = 8
    EOF = 9
    IDENTIFY = 10


class LibState(IntEnum):
    """The library's idea of a socket's state (for IDENTIFY)."""

    NEW = 0
    CONNECTING = 1
    CONNECTED = 2
    LISTENING = 3


@dataclass
class Message:
    """One request or reply."""

    op: int
    sid: int = -1
    res: int = 0
    a: tuple[int, int, int, int] = (0, 0, 0, 0)
    data: bytes = b""

    def pack(self) -> bytes:
        if len(self.data) > DATA_MAX:
            raise ValueError("message data too long")
        return MSG.pack(self.op, self.sid, self.res, *self.a, len(self.data), self.data)

    @classmethod
    def unpack(cls, raw: bytes) -> Message:
        """Parse one message; ValueError if it is not one."""
        if len(raw) != MSG.size:
            raise ValueError(f"control message of {len(raw)} bytes, expected {MSG.size}")
        op, sid, res, a0, a1, a2, a3, length, data = MSG.unpack(raw)
        if length > DATA_MAX:
            raise ValueError("control message data length out of range")
        return cls(op, sid, res, (a0, a1, a2, a3), data[:length])

    def inode(self, lo: int = 1) -> int:
        """The 64-bit inode carried in a[lo], a[lo + 1]."""
        return (self.a[lo] & 0xFFFFFFFF) | ((self.a[lo + 1] & 0xFFFFFFFF) << 32)


def pack_sockaddr(ip: str, port: int) -> bytes:
    """``struct sockaddr_in`` for (ip, port)."""
    return SOCKADDR_IN.pack(socket.AF_INET, port.to_bytes(2, "big"), socket.inet_aton(ip))


def unpack_sockaddr(data: bytes) -> tuple[str, int]:
    """(ip, port) from ``struct sockaddr_in``; ValueError if it is not one."""
    if len(data) < SOCKADDR_IN.size:
        raise ValueError("short sockaddr_in")
    family, port, addr = SOCKADDR_IN.unpack(data[: SOCKADDR_IN.size])
    if family != socket.AF_INET:
        raise ValueError(f"address family {family} is not AF_INET")
    return socket.inet_ntoa(addr), int.from_bytes(port, "big")


def pack_udp_header(ip: str, port: int, err: int = 0) -> bytes:
    return UDP_HDR.pack(socket.inet_aton(ip), port.to_bytes(2, "big"), err)


def unpack_udp_header(data: bytes | memoryview) -> tuple[str, int]:
    addr, port, _ = UDP_HDR.unpack(data[: UDP_HDR.size])
    return socket.inet_ntoa(addr), int.from_bytes(port, "big")
