"""The control channel between ``libanp_preload.so`` and the anp process, as bytes.

One fixed-size message per request and one per reply over a ``SOCK_SEQPACKET`` Unix socket;
a descriptor travels beside it with ``SCM_RIGHTS`` where the operation says so. The C side
is ``struct anp_msg`` in ``libanp_preload.c``: the two must change together.

=============  ===================================================  ================================
op             request                                              reply
=============  ===================================================  ================================
SOCKET         a0 type (| IPPROTO_ICMP[V6] << 16: a ping socket),   res: the socket id (sid); a0:
               a1/a2 inode of the program's end, a3 family; fd:     the stack's IPv4 broadcast
               the anp end of the pair                              address, its bytes as stored
BIND           data: address slot                                   res 0
LISTEN         a0 backlog                                           res 0
ACCEPT         --                                                   sid of the new socket, data:
                                                                    peer slot + local slot; fd:
                                                                    the program's end of its pair
CONNECT        data: address slot, a0 filler bytes (TCP); no data:  res 0 = started (TCP) or done
               UDP disconnect                                       (UDP)
NAME           a0 0 = sockname, 1 = peername                        data: address slot
SETOPT         a0 level, a1 name, data[:len] value                  res 0
GETOPT         a0 level, a1 name, a2 room                           data[:len] value
EOF            --                                                   res 0 or -errno: why the
                                                                    stream ended (reset ...)
IDENTIFY       a0/a1 inode (a socket inherited across exec)         res sid, a0 type, a1 state,
                                                                    a2 family
IFADDRS        --                                                   data: the stack's IPv4
                                                                    address (4), prefix length
                                                                    (1), IPv6 address (16),
                                                                    prefix length (1; 0: none)
RELEASED       (never the library's: a sibling worker's API tells   --
               the front worker, unasked, which sockets it handed
               out with ACCEPT it has forgotten; data: int32 sids)
=============  ===================================================  ================================

``res`` is ``>= 0`` or ``-errno``. An *address slot* is ``struct sockaddr_in`` or ``struct
sockaddr_in6`` (its family says which) in 28 bytes. The library turns an AF_INET6 socket's
v4-mapped addresses into IPv4 ones (and back), so an IPv4 peer is always AF_INET here.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

#: op, sid, res, a0..a3, len, data[256] -- ``struct anp_msg``. (256: room for the
#: largest option value a program reads, getsockopt(TCP_INFO)'s 232 bytes.)
MSG = struct.Struct("=iii4iI256s")
DATA_MAX = 256

#: Datagram header between the two ends of a UDP socket: address (IPv4 in the first 4
#: bytes), port (network order), an errno in place of a datagram (an ICMP error for a
#: connected socket), the address family, and the datagram's TTL (hop limit; 0: not known).
UDP_HDR = struct.Struct("=16s2sHHBx")

#: One address on the channel: sockaddr_in or sockaddr_in6, in a slot of 28 bytes.
ADDR_SLOT = 28
SOCKADDR_IN = struct.Struct("=H2s4s8x")
SOCKADDR_IN6 = struct.Struct("=H2sI16sI")


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
    RELEASED = 11
    IFADDRS = 12


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


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def pack_sockaddr(ip: str, port: int) -> bytes:
    """An address slot (28 bytes) for (ip, port), IPv4 or IPv6."""
    if _family(ip) == socket.AF_INET6:
        raw = socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0])
        return SOCKADDR_IN6.pack(socket.AF_INET6, port.to_bytes(2, "big"), 0, raw, 0)
    v4 = SOCKADDR_IN.pack(socket.AF_INET, port.to_bytes(2, "big"), socket.inet_aton(ip))
    return v4.ljust(ADDR_SLOT, b"\0")


def unpack_sockaddr(data: bytes) -> tuple[str, int]:
    """(ip, port) from an address slot; ValueError if it is not one."""
    if len(data) < SOCKADDR_IN.size:
        raise ValueError("short address")
    (family,) = struct.unpack_from("=H", data)
    if family == socket.AF_INET:
        _, port, addr = SOCKADDR_IN.unpack(data[: SOCKADDR_IN.size])
        return socket.inet_ntoa(addr), int.from_bytes(port, "big")
    if family == socket.AF_INET6 and len(data) >= SOCKADDR_IN6.size:
        _, port, _flow, addr6, _scope = SOCKADDR_IN6.unpack(data[: SOCKADDR_IN6.size])
        return socket.inet_ntop(socket.AF_INET6, addr6), int.from_bytes(port, "big")
    raise ValueError(f"address family {family} is neither AF_INET nor AF_INET6")


def pack_udp_header(ip: str, port: int, err: int = 0, ttl: int = 0) -> bytes:
    """The header of a datagram from ``ip``:``port`` (``err``: an errno reported instead;
    ``ttl``: its TTL or hop limit, 0 if not known, for IP_RECVTTL)."""
    family = _family(ip)
    raw = socket.inet_pton(family, ip.split("%", 1)[0])
    return UDP_HDR.pack(raw, port.to_bytes(2, "big"), err, family, min(255, max(0, ttl)))


def unpack_udp_header(data: bytes | memoryview) -> tuple[str, int]:
    raw, port, _err, family, _ttl = UDP_HDR.unpack(data[: UDP_HDR.size])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw), int.from_bytes(port, "big")
    return socket.inet_ntoa(raw[:4]), int.from_bytes(port, "big")
