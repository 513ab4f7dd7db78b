"""Name resolution for the stack: numeric IPv4/IPv6 addresses and /etc/hosts names, no DNS.

A userspace stack with its own address cannot use the host's resolver for names that
need DNS (the query would leave through the kernel's interfaces), so such names fail with
``socket.gaierror`` like an unresolvable name does in asyncio.
"""

from __future__ import annotations

import ipaddress
import socket

HOSTS_FILE = "/etc/hosts"


def _lookup_hosts_file(name: str, path: str = HOSTS_FILE, version: int = 4) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) < 2:
                    continue
                try:
                    addr = ipaddress.ip_address(fields[0])
                except ValueError:
                    continue
                if addr.version == version and name.lower() in (n.lower() for n in fields[1:]):
                    return str(addr)
    except OSError:
        return None
    return None


def resolve_ipv4_sync(host: str | None) -> str:
    """Resolve ``host`` to a dotted-quad string without DNS (raises socket.gaierror)."""
    if host is None or host == "":
        return "0.0.0.0"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        found = _lookup_hosts_file(host)
        if found is None:
            raise socket.gaierror(
                socket.EAI_NONAME,
                f"{host!r}: only numeric IPv4 and /etc/hosts names resolve on the stack",
            ) from None
        return found
    if addr.version != 4:
        raise socket.gaierror(socket.EAI_FAMILY, f"{host!r}: the stack speaks IPv4 only")
    return str(addr)


async def resolve_ipv4(host: str | None) -> str:
    """Async face of :func:`resolve_ipv4_sync` (reading /etc/hosts is fast; no executor)."""
    return resolve_ipv4_sync(host)


def resolve_ip_sync(host: str | None, family: int = 0) -> str:
    """Resolve ``host`` to an IPv4 or IPv6 address string without DNS.

    ``family`` (``socket.AF_INET``, ``AF_INET6`` or 0 for either) says which answer is
    wanted; /etc/hosts is read for IPv4 first unless IPv6 is asked for. A numeric address
    of the other family raises ``socket.gaierror`` (EAI_FAMILY), as getaddrinfo does.
    """
    if host is None or host == "":
        return "::" if family == socket.AF_INET6 else "0.0.0.0"
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        order = (6,) if family == socket.AF_INET6 else (4,) if family == socket.AF_INET else (4, 6)
        for version in order:
            found = _lookup_hosts_file(host, version=version)
            if found is not None:
                return found
        raise socket.gaierror(
            socket.EAI_NONAME, f"{host!r}: only numeric addresses and /etc/hosts names resolve"
        ) from None
    want = 4 if family == socket.AF_INET else 6 if family == socket.AF_INET6 else None
    if want is not None and addr.version != want:
        raise socket.gaierror(socket.EAI_FAMILY, f"{host!r}: address of another family")
    return str(addr)


async def resolve_ip(host: str | None, family: int = 0) -> str:
    """Async face of :func:`resolve_ip_sync`."""
    return resolve_ip_sync(host, family)


def addr_to_bytes(addr: str) -> bytes:
    """An address string (either family) to its 4 or 16 bytes."""
    return ipaddress.ip_address(addr.split("%", 1)[0]).packed


def addr_to_str(addr: bytes) -> str:
    """4 or 16 bytes to the address's text form."""
    return str(ipaddress.ip_address(bytes(addr)))


def endpoint_name(addr: bytes, port: int) -> str:
    """``10.0.0.1:80`` or ``[fd00::1]:80``, as ``ss`` prints an address and port."""
    return f"[{addr_to_str(addr)}]:{port}" if len(addr) == 16 else f"{addr_to_str(addr)}:{port}"


def bound_name(ip: str, ip6: str | None, port: int, v4: bool, v6: bool) -> str:
    """How ``ss`` names a socket bound to the stack's port ``port`` that hears the families
    ``v4``/``v6``: ``10.0.0.2:80`` (IPv4), ``[fd00::2]:80`` (IPv6 only), or ``*:80`` for a
    dual-stack socket on a stack that has both families (as ss shows ``[::]:80``
    without IPV6_V6ONLY); a dual-stack socket on an IPv4-only stack hears IPv4 only."""
    if v6 and ip6 is not None:
        return f"*:{port}" if v4 else f"[{ip6}]:{port}"
    return f"{ip}:{port}"


def sockaddr(addr: bytes, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
    """The socket-module address of ``addr:port``: a 2-tuple for IPv4, a 4-tuple
    (host, port, flowinfo, scope_id) for IPv6, as ``getpeername`` gives them."""
    if len(addr) == 16:
        return (addr_to_str(addr), port, 0, 0)
    return (addr_to_str(addr), port)
