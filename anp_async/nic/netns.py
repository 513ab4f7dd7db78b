"""Network namespaces: the sandbox every TAP, veth, address and test packet lives in.

A :class:`Netns` is a named namespace (``ip netns add NAME``, bind-mounted under
``/run/netns``). Processes run inside it with :meth:`Netns.run` / :meth:`Netns.popen`, and the
*calling thread* can step inside it with :meth:`Netns.enter` (``setns(2)``) to create a
device there while the process itself stays in the root namespace: a TAP's network
namespace is fixed when ``/dev/net/tun`` is opened, and a netlink socket's when it is created.

Network safety: nothing in this module configures the root namespace. :func:`veth_pair`
creates its devices inside the first namespace and moves one end into the second.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from typing import Any

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int

# Names created by this process and not yet deleted (the test session checks it is empty).
_created: set[str] = set()
#: Every name this process created, deleted since or not (``names_created``).
_history: set[str] = set()
_created_lock = threading.Lock()


def unique_name(prefix: str = "anp") -> str:
    """A fresh namespace/device name such as ``anp-1a2b3c4d``."""
    return f"{prefix}-{secrets.token_hex(4)}"


def created_namespaces() -> set[str]:
    """Namespaces created by this process with :meth:`Netns.create` that still exist."""
    with _created_lock:
        return {n for n in _created if os.path.exists(os.path.join(NETNS_DIR, n))}


def names_created() -> set[str]:
    """Every namespace name this process created with :meth:`Netns.create`, including
    those deleted since (the tests check them against the ``anp-`` naming rule)."""
    with _created_lock:
        return set(_history)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET) failed: {os.strerror(err)}")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], text=True, capture_output=True, check=False)


class Netns:
    """A named network namespace.

    ``Netns(name)`` is a handle to an existing namespace; :meth:`create` makes a new one.
    Used as a context manager it deletes the namespace on exit, also on an exception.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    @property
    def path(self) -> str:
        """The bind mount that keeps the namespace alive (``/run/netns/NAME``)."""
        return os.path.join(NETNS_DIR, self.name)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    @classmethod
    def create(cls, name: str | None = None) -> Netns:
        """Create a namespace (``ip netns add``); a random ``anp-xxxxxxxx`` name by default.

        Raises FileExistsError if the name is taken, PermissionError when not root.
        """
        name = name or unique_name()
        ns = cls(name)
        if ns.exists():
            raise FileExistsError(errno.EEXIST, f"network namespace {name} already exists")
        if os.geteuid() != 0:
            raise PermissionError(errno.EPERM, "creating a network namespace needs root")
        res = _ip("netns", "add", name)
        if res.returncode != 0:
            if "exists" in res.stderr:
                raise FileExistsError(errno.EEXIST, f"network namespace {name} already exists")
            raise OSError(f"ip netns add {name} failed: {res.stderr.strip()}")
        with _created_lock:
            _created.add(name)
            _history.add(name)
        return ns

    def pids(self) -> list[int]:
        """Processes whose network namespace is this one (``ip netns pids``)."""
        res = _ip("netns", "pids", self.name)
        if res.returncode != 0:
            return []
        return [int(p) for p in res.stdout.split() if p.isdigit()]

    def delete(self) -> None:
        """Kill processes left inside, then delete the namespace. Idempotent."""
        if self.exists():
            for pid in self.pids():
                if pid == os.getpid():
                    continue  # a thread of ours still inside: never kill ourselves
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            res = _ip("netns", "delete", self.name)
            if res.returncode != 0 and self.exists():
                raise OSError(f"ip netns delete {self.name} failed: {res.stderr.strip()}")
        with _created_lock:
            _created.discard(self.name)

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def _argv(self, argv: Sequence[str] | str) -> list[str]:
        if isinstance(argv, str):
            argv = [argv]
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str] | str, *, check: bool = False, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (``ip netns exec NAME argv``).

        Output is captured as text unless the caller passes its own ``stdout``/``stderr``.
        """
        kw.setdefault("text", True)
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        return subprocess.run(self._argv(argv), check=check, **kw)

    def popen(self, argv: Sequence[str] | str, **kw: Any) -> subprocess.Popen[Any]:
        """Start a command inside the namespace; the caller waits for or kills it."""
        return subprocess.Popen(self._argv(argv), **kw)

    @contextlib.contextmanager
    def enter(self) -> Iterator[Netns]:
        """Move the calling thread into the namespace; restore the old one on exit.

        Sockets and ``/dev/net/tun`` files opened inside stay bound to this namespace after
        the thread has left it.
        """
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            os.close(own)
            raise FileNotFoundError(
                errno.ENOENT, f"network namespace {self.name} does not exist"
            ) from None
        try:
            _setns(target)
        except BaseException:
            os.close(own)
            raise
        finally:
            os.close(target)
        try:
            yield self
        finally:
            try:
                _setns(own)
            finally:
                os.close(own)


def _as_netns(ns: Netns | str) -> Netns:
    return ns if isinstance(ns, Netns) else Netns(ns)


def write_sysctl_inside(key: str, value: str) -> None:
    """Write ``/proc/sys/<key>`` for the namespace the calling thread is in.

    ``/proc/sys/net`` resolves against the writer's namespace, so call this inside
    :meth:`Netns.enter`.
    """
    path = "/proc/sys/" + key.replace(".", "/")
    with open(path, "w") as f:
        f.write(value)


def disable_ipv6(ns: Netns | str, ifname: str = "all") -> None:
    """Turn IPv6 off on one interface (or ``all``/``default``) inside ``ns``.

    Without this the kernel sends router solicitations and MLD reports that an IPv4 stack
    only has to count and drop.
    """
    ns = _as_netns(ns)
    res = ns.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=1"])
    if res.returncode != 0:
        raise OSError(f"disabling IPv6 on {ifname} in {ns.name} failed: {res.stderr.strip()}")


def loopback_up(ns: Netns | str) -> None:
    """Bring ``lo`` up inside ``ns`` (a new namespace starts with it down)."""
    ns = _as_netns(ns)
    from pyroute2 import IPRoute

    with ns.enter(), IPRoute() as ipr:
        idx = ipr.link_lookup(ifname="lo")
        ipr.link("set", index=idx[0], state="up")


def _configure_link(ipr: Any, ifname: str, addr: str | None, mtu: int | None) -> int:
    """Set MTU, address and up on ``ifname`` through an IPRoute bound to its namespace."""
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise OSError(errno.ENODEV, f"no interface {ifname}")
    idx = found[0]
    if mtu is not None:
        ipr.link("set", index=idx, mtu=mtu)
    if addr:
        ip, _, plen = addr.partition("/")
        ipr.addr("add", index=idx, address=ip, prefixlen=int(plen or 32))
    ipr.link("set", index=idx, state="up")
    return idx


def veth_pair(
    ns_a: Netns,
    ns_b: Netns,
    addr_a: str | None = "10.0.1.1/24",
    addr_b: str | None = "10.0.1.2/24",
    name_a: str = "veth-a",
    name_b: str = "veth-b",
    mtu: int = 1500,
) -> None:
    """A veth cable between two namespaces, addressed and up, IPv6 off on both ends.

    Both ends are created inside ``ns_a``, then ``name_b`` is moved into ``ns_b``: no
    device ever exists in the root namespace.
    """
    from pyroute2 import IPRoute

    with ns_a.enter():
        write_sysctl_inside("net.ipv6.conf.default.disable_ipv6", "1")
        with IPRoute() as ipr:
            ipr.link("add", ifname=name_a, kind="veth", peer=name_b)
            try:
                peer_idx = ipr.link_lookup(ifname=name_b)[0]
                fd = os.open(ns_b.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    ipr.link("set", index=peer_idx, net_ns_fd=fd)
                finally:
                    os.close(fd)
                _configure_link(ipr, name_a, addr_a, mtu)
            except BaseException:
                with contextlib.suppress(Exception):
                    ipr.link("del", ifname=name_a)
                raise
    with ns_b.enter():
        write_sysctl_inside(f"net.ipv6.conf.{name_b}.disable_ipv6", "1")
        with IPRoute() as ipr:
            _configure_link(ipr, name_b, addr_b, mtu)
