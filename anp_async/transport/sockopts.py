"""Linux's rules for the integer socket options a stack socket keeps.

A stack socket has no kernel socket behind it: its options live in a table (the
socket-like object of a transport, ``transport/sockobj.py``; the record of a preloaded
program's socket, ``preload/sockets.py``). For a program to read back what it would read
on Linux, the table stores what Linux stores, refuses what Linux refuses and answers
Linux's default for an option never set:

- a flag stores 0 or 1, whatever non-zero value was given (SO_KEEPALIVE 3000 reads 1);
- a value out of the option's range is EINVAL (IP_TTL 3000, TCP_KEEPCNT 200), and the
  read-only options (SO_TYPE, SO_PROTOCOL, SO_DOMAIN, SO_ACCEPTCONN, SO_ERROR) are
  ENOPROTOOPT to set;
- IP_TTL and IPV6_UNICAST_HOPS take -1 for "the default" and read the default back;
  IP_TOS keeps its low byte (on a TCP socket without the two ECN bits, which belong to
  the connection); TCP_LINGER2 is capped at 120 s (tcp_fin_timeout's limit);
- unset, an option reads Linux's default: TCP_KEEPIDLE 7200, TCP_KEEPINTVL 75,
  TCP_KEEPCNT 9, TCP_SYNCNT 6, TCP_LINGER2 60, TCP_QUICKACK 1, IP_TTL 64,
  IP_MTU_DISCOVER 1 (IP_PMTUDISC_WANT), IPV6_UNICAST_HOPS 64; others 0.

Checked against a program that sets and reads each option on a kernel socket and on a
stack socket (tests/integration/test_preload_programs.py).
"""

from __future__ import annotations

import errno
import os
import socket

__all__ = ["IP_MTU", "OPT_DEFAULTS", "RULED", "check_option", "option_default"]

SOL, TCP, IP, IP6 = socket.SOL_SOCKET, socket.IPPROTO_TCP, socket.IPPROTO_IP, socket.IPPROTO_IPV6

# Linux's numbers of the options Python's socket module (3.11) has no name for.
_IP_PKTINFO, _IP_MTU_DISCOVER, _IP_RECVERR, _IP_RECVTTL = 8, 10, 11, 12
#: getsockopt(IPPROTO_IP, IP_MTU): a connected socket's path MTU.
IP_MTU = 14

#: Options that store 0 or 1.
FLAGS = frozenset({
    (SOL, socket.SO_KEEPALIVE), (SOL, socket.SO_REUSEADDR), (SOL, socket.SO_REUSEPORT),
    (SOL, socket.SO_OOBINLINE), (SOL, socket.SO_BROADCAST), (SOL, socket.SO_DONTROUTE),
    (TCP, socket.TCP_NODELAY), (TCP, socket.TCP_CORK), (TCP, socket.TCP_QUICKACK),
    (IP, _IP_RECVERR), (IP, _IP_PKTINFO), (IP, _IP_RECVTTL), (IP, socket.IP_RECVTOS),
    (IP6, socket.IPV6_V6ONLY), (IP6, socket.IPV6_RECVPKTINFO), (IP6, socket.IPV6_RECVHOPLIMIT),
    (IP6, socket.IPV6_RECVTCLASS),
})  # fmt: skip

#: Options that only report (setting them is ENOPROTOOPT).
READ_ONLY = frozenset({
    (SOL, socket.SO_TYPE), (SOL, socket.SO_PROTOCOL), (SOL, socket.SO_DOMAIN),
    (SOL, socket.SO_ACCEPTCONN), (SOL, socket.SO_ERROR),
})  # fmt: skip

#: Accepted values, inclusive (Linux: MAX_TCP_KEEPIDLE, MAX_TCP_KEEPCNT, MAX_TCP_SYNCNT ...).
RANGES: dict[tuple[int, int], tuple[int, int]] = {
    (TCP, socket.TCP_KEEPIDLE): (1, 32767),
    (TCP, socket.TCP_KEEPINTVL): (1, 32767),
    (TCP, socket.TCP_KEEPCNT): (1, 127),
    (TCP, socket.TCP_SYNCNT): (1, 127),
    (TCP, socket.TCP_USER_TIMEOUT): (0, 2**31 - 1),
    (IP, socket.IP_TTL): (1, 255),  # and -1: the default
    (IP, _IP_MTU_DISCOVER): (0, 5),
    (IP6, socket.IPV6_UNICAST_HOPS): (0, 255),  # and -1: the default
    (IP6, socket.IPV6_TCLASS): (-1, 255),
}

#: Options for which -1 means "back to the default".
_MINUS_ONE_IS_DEFAULT = frozenset({(IP, socket.IP_TTL), (IP6, socket.IPV6_UNICAST_HOPS)})

#: What an option reads before it is set (else 0).
OPT_DEFAULTS: dict[tuple[int, int], int] = {
    (TCP, socket.TCP_KEEPIDLE): 7200,
    (TCP, socket.TCP_KEEPINTVL): 75,
    (TCP, socket.TCP_KEEPCNT): 9,
    (TCP, socket.TCP_SYNCNT): 6,
    (TCP, socket.TCP_LINGER2): 60,
    (TCP, socket.TCP_QUICKACK): 1,
    (IP, socket.IP_TTL): 64,
    (IP, _IP_MTU_DISCOVER): 1,
    (IP6, socket.IPV6_UNICAST_HOPS): 64,
}

#: Every option these rules speak of (others are kept as given).
RULED = FLAGS | READ_ONLY | RANGES.keys() | OPT_DEFAULTS.keys() | {(IP, socket.IP_TOS)}

#: tcp_fin_timeout's upper bound (TCP_FIN_TIMEOUT_MAX), where TCP_LINGER2 stops.
_LINGER2_MAX = 120


def _refuse(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def check_option(stream: bool, level: int, name: int, value: int) -> int:
    """The value Linux keeps for ``setsockopt(level, name, value)`` on a TCP (``stream``)
    or UDP socket; OSError(EINVAL) for a value out of range, OSError(ENOPROTOOPT) for a
    read-only option. Options it has no rule for keep the value as given."""
    key = (level, name)
    if key in READ_ONLY:
        raise _refuse(errno.ENOPROTOOPT)
    if key in FLAGS:
        return int(value != 0)
    if value == -1 and key in _MINUS_ONE_IS_DEFAULT:
        return OPT_DEFAULTS[key]
    bounds = RANGES.get(key)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise _refuse(errno.EINVAL)
    if key == (IP6, socket.IPV6_TCLASS) and value == -1:
        return 0
    if key == (IP, socket.IP_TOS):
        return value & (0xFC if stream else 0xFF)
    if key == (TCP, socket.TCP_LINGER2):
        return -1 if value < 0 else min(value, _LINGER2_MAX)
    return value


def option_default(level: int, name: int) -> int:
    """What ``getsockopt(level, name)`` reads on Linux before the option is set."""
    return OPT_DEFAULTS.get((level, name), 0)
