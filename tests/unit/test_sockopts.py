"""Linux's rules for integer socket options (transport/sockopts.py), and the socket-like
object of a transport that keeps them (transport/sockobj.py)."""

from __future__ import annotations

import errno
import socket

import pytest

from anp_async.transport.sockobj import StackSocket
from anp_async.transport.sockopts import check_option, option_default

S, T, IP, IP6 = socket.SOL_SOCKET, socket.IPPROTO_TCP, socket.IPPROTO_IP, socket.IPPROTO_IPV6


@pytest.mark.parametrize(
    ("stream", "level", "name", "value", "kept"),
    [
        (True, S, socket.SO_KEEPALIVE, 3000, 1),
        (True, S, socket.SO_KEEPALIVE, 0, 0),
        (True, T, socket.TCP_NODELAY, -1, 1),
        (True, T, 4, 3000, 3000),  # TCP_KEEPIDLE
        (True, T, 8, 3000, 120),  # TCP_LINGER2 capped
        (True, T, 8, -5, -1),
        (False, IP, socket.IP_TTL, -1, 64),  # the default
        (False, IP, socket.IP_TTL, 255, 255),
        (True, IP, socket.IP_TOS, 0x2B, 0x28),  # TCP: the ECN bits are the connection's
        (False, IP, socket.IP_TOS, 0x2B, 0x2B),
        (False, IP6, socket.IPV6_UNICAST_HOPS, -1, 64),
        (False, IP6, socket.IPV6_TCLASS, -1, 0),
        (True, S, socket.SO_RCVLOWAT, 3000, 3000),  # no rule: kept as given
    ],
)
def test_kept_as_linux_keeps_it(stream: bool, level: int, name: int, value: int, kept: int) -> None:
    assert check_option(stream, level, name, value) == kept


@pytest.mark.parametrize(
    ("level", "name", "value", "code"),
    [
        (IP, socket.IP_TTL, 256, errno.EINVAL),
        (IP, socket.IP_TTL, 0, errno.EINVAL),
        (T, 6, 128, errno.EINVAL),  # TCP_KEEPCNT
        (T, 4, 0, errno.EINVAL),  # TCP_KEEPIDLE
        (T, 7, 200, errno.EINVAL),  # TCP_SYNCNT
        (IP, 10, 6, errno.EINVAL),  # IP_MTU_DISCOVER
        (S, socket.SO_TYPE, 1, errno.ENOPROTOOPT),
        (S, socket.SO_ERROR, 0, errno.ENOPROTOOPT),
    ],
)
def test_refused_as_linux_refuses(level: int, name: int, value: int, code: int) -> None:
    with pytest.raises(OSError) as e:
        check_option(True, level, name, value)
    assert e.value.errno == code


def test_defaults() -> None:
    assert [option_default(T, n) for n in (4, 5, 6, 7, 8, 12)] == [7200, 75, 9, 6, 60, 1]
    assert option_default(IP, socket.IP_TTL) == 64 and option_default(IP, 10) == 1
    assert option_default(S, socket.SO_KEEPALIVE) == 0


class _Owner:
    def __init__(self) -> None:
        self._sockopts: dict[tuple[int, int], int] = {}
        self.applied: list[tuple[int, int, int]] = []

    def _apply_sockopt(self, level: int, name: int, value: int) -> None:
        self.applied.append((level, name, value))


def test_a_transports_socket_takes_the_rules() -> None:
    owner = _Owner()
    sock = StackSocket(owner, "udp")
    assert sock.getsockopt(IP, socket.IP_TTL) == 64  # unset: the default
    with pytest.raises(OSError) as e:
        sock.setsockopt(IP, socket.IP_TTL, 3000)
    assert e.value.errno == errno.EINVAL and owner.applied == []
    sock.setsockopt(IP, socket.IP_TTL, -1)
    sock.setsockopt(S, socket.SO_BROADCAST, 7)
    assert owner.applied == [(IP, socket.IP_TTL, 64), (S, socket.SO_BROADCAST, 1)]
    assert sock.getsockopt(S, socket.SO_BROADCAST) == 1
