"""Name resolution for the stack: numeric IPv4 addresses and /etc/hosts names, no DNS.

A userspace stack with its own address cannot use the host's resolver for names that
need DNS (the query would leave through the kernel's interfaces), so such names fail with
``socket.gaierror`` like an unresolvable name does in asyncio.
"""

from __future__ import annotations

import ipaddress
import socket

HOSTS_FILE = "/etc/hosts"


def _lookup_hosts_file(name: str, path: str = HOSTS_FILE) -> str | None:
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
                if addr.version == 4 and name.lower() in (n.lower() for n in fields[1:]):
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
