"""A Linux TAP device: the kernel on one side, our stack on the other.

Opening ``/dev/net/tun`` and asking for ``IFF_TAP | IFF_NO_PI`` gives a file descriptor on
which every ``read`` returns one Ethernet frame the kernel sent to the device and every
``write`` hands one frame to the kernel as if it had arrived on the wire. The kernel end of
the device gets an address (``peer``) so ordinary tools (ping, nc, curl) talk to the stack.

The device is created inside a network namespace (``netns``): the calling thread enters it
for the open and the netlink configuration, then returns, so the stack process itself runs
in the root namespace while its device and every packet stay in the sandbox.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import ipaddress
import os
import struct
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any, TypeVar

from .base import Buffer, Nic
from .netns import Netns, write_sysctl_inside
from .vnet import VNET_HDR_LEN

_T = TypeVar("_T")

TUN_PATH = "/dev/net/tun"
# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
#: Most queues one TAP takes (the kernel's MAX_TAP_QUEUES is 256).
MAX_QUEUES = 256
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04

_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name + flags, padded to 40 bytes

#: One read never returns more than one frame; this covers any frame the kernel sends (a
#: 64 KiB GSO datagram plus Ethernet and virtio-net headers), so nothing is truncated.
READ_SIZE = 65536 + 14 + VNET_HDR_LEN
#: Frames the kernel may queue for us before it drops (the TAP's txqueuelen; tun's default
#: is 500). A burst of connections (1,000 handshakes, then each one's first window as one
#: 64 KiB TSO frame) must fit while the stack catches up, or it turns into retransmission
#: timeouts; bounded by the senders' socket buffers, like any NIC ring.
TX_QUEUE_LEN = 65536


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_plain_thread(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` in a new thread (no event loop there) and return or raise its outcome."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed back to the caller below
            box["error"] = exc

    t = threading.Thread(target=run, name="anp-tap-setup")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _netns_handle(netns: Netns | str | None) -> Netns | None:
    if netns is None or isinstance(netns, Netns):
        return netns
    return Netns(netns)


class TapNic(Nic):
    """A TAP device as a :class:`~anp_async.nic.base.Nic`.

    Attributes: ``name`` (interface name), ``peer`` (kernel-side address with prefix, or
    None), ``netns_name`` (namespace the device lives in, None for the current one),
    ``kernel_mac`` (the kernel end's MAC address, 6 bytes), ``vnet_hdr`` (frames carry a
    :data:`VNET_HDR_LEN`-byte virtio-net header in front, both directions).
    """

    def __init__(
        self,
        fd: int,
        name: str,
        *,
        peer: str | None = None,
        netns_name: str | None = None,
        mtu: int = 1500,
        kernel_mac: bytes = b"",
        vnet_hdr: bool = False,
    ) -> None:
        super().__init__()
        self._fd = fd
        self.name = name
        self.peer = peer
        self.netns_name = netns_name
        self.mtu = mtu
        self.kernel_mac = kernel_mac
        self.vnet_hdr = vnet_hdr

    def __repr__(self) -> str:
        return f"TapNic({self.name!r}, peer={self.peer!r}, netns={self.netns_name!r})"

    @classmethod
    def open(
        cls,
        name: str,
        *,
        peer: str | None = None,
        netns: Netns | str | None = None,
        mtu: int = 1500,
        vnet_hdr: bool = False,
        peer6: str | None = None,
    ) -> TapNic:
        """Create (or attach to) TAP ``name``, configure its kernel end and bring it up.

        ``peer`` is the kernel side's address with prefix length, e.g. ``"10.0.0.1/24"``;
        ``peer6`` its IPv6 address (``"fd00::1/64"``): IPv6 stays on for the device then,
        and is turned off otherwise.
        ``netns`` is the namespace the device is created in (None: the calling thread's).
        With ``vnet_hdr`` the kernel may hand over 64 KiB TCP frames (TSO) and leave
        checksums partial; each frame then starts with a virtio-net header.
        """
        _check_open_args(name, peer, mtu)
        if peer6 is not None:
            try:
                ipaddress.IPv6Interface(peer6)
            except ValueError:
                raise ValueError(f"peer6 {peer6!r} is not an IPv6 address/prefix") from None
        ns = _netns_handle(netns)

        def create() -> tuple[int, bytes]:
            with ns.enter() if ns is not None else nullcontext():
                fd = _open_tun(name, vnet_hdr)
                try:
                    return fd, _configure(name, peer, mtu, peer6)
                except BaseException:
                    os.close(fd)
                    raise

        # pyroute2's synchronous API runs an event loop of its own, which cannot start in a
        # thread whose loop is already running: then do the set-up in a short-lived thread.
        fd, kernel_mac = _in_plain_thread(create) if _loop_running() else create()
        return cls(
            fd,
            name,
            peer=peer,
            netns_name=ns.name if ns is not None else None,
            mtu=mtu,
            kernel_mac=kernel_mac,
            vnet_hdr=vnet_hdr,
        )

    @classmethod
    def open_queues(
        cls,
        name: str,
        queues: int,
        *,
        peer: str | None = None,
        netns: Netns | str | None = None,
        mtu: int = 1500,
        vnet_hdr: bool = False,
        steering: bool = True,
        peer6: str | None = None,
    ) -> list[TapNic]:
        """A multi-queue TAP (``IFF_MULTI_QUEUE``): one :class:`TapNic` per queue.

        Queue ``i`` is the ``i``-th descriptor attached. The kernel sends each frame to one
        queue (:mod:`.steering` explains how it chooses); with ``steering`` the choice is
        the known function of :data:`.steering.STEERING_PROGRAM` instead of automq's
        secret-keyed hash. Every queue may send any frame. The device disappears when the
        last queue is closed. ``peer6`` is the kernel end's IPv6 address, as in :meth:`open`.
        """
        _check_open_args(name, peer, mtu)
        if isinstance(queues, bool) or not isinstance(queues, int):
            raise ValueError(f"queues must be an integer, got {queues!r}")
        if not 1 <= queues <= MAX_QUEUES:
            raise ValueError(f"queues must be 1..{MAX_QUEUES}, got {queues}")
        ns = _netns_handle(netns)

        def create() -> tuple[list[int], bytes]:
            fds: list[int] = []
            with ns.enter() if ns is not None else nullcontext():
                try:
                    for _ in range(queues):
                        fds.append(_open_tun(name, vnet_hdr, multi_queue=True))
                    if steering:
                        from .steering import attach, load_program

                        prog = load_program()
                        try:
                            attach(fds[0], prog)
                        finally:
                            os.close(prog)
                    return fds, _configure(name, peer, mtu, peer6)
                except BaseException:
                    for fd in fds:
                        os.close(fd)
                    raise

        fds, kernel_mac = _in_plain_thread(create) if _loop_running() else create()
        return [
            cls(
                fd,
                name,
                peer=peer,
                netns_name=ns.name if ns is not None else None,
                mtu=mtu,
                kernel_mac=kernel_mac,
                vnet_hdr=vnet_hdr,
            )
            for fd in fds
        ]

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("TapNic is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def recv_batch(self, max_frames: int = 64) -> list[bytes]:
        """Read up to ``max_frames`` frames without blocking."""
        frames: list[bytes] = []
        fd = self._fd
        if fd < 0:
            return frames
        stats = self.stats
        read = os.read
        nbytes = 0
        while len(frames) < max_frames:
            try:
                frame = read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:
                stats.rx_errors += 1
                break
            if not frame:
                break
            frames.append(frame)
            nbytes += len(frame)
        stats.rx_frames += len(frames)
        stats.rx_bytes += nbytes
        return frames

    def send(self, parts: Sequence[Buffer]) -> None:
        """Write one frame made of ``parts`` with a single ``writev``; never blocks."""
        stats = self.stats
        if self._fd < 0:
            stats.tx_dropped += 1
            return
        try:
            n = os.writev(self._fd, parts)
        except (BlockingIOError, InterruptedError):
            stats.tx_dropped += 1
            return
        except OSError as e:
            # EIO: the device is down (a real NIC with no carrier drops too).
            if e.errno in (errno.ENOBUFS, errno.EIO, errno.ENOMEM):
                stats.tx_dropped += 1
            else:
                stats.tx_errors += 1
            return
        stats.tx_frames += 1
        stats.tx_bytes += n

    def close(self) -> None:
        """Close the fd; a non-persistent TAP device disappears with it."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


#: Largest MTU a TAP takes (the kernel's limit for tun devices).
MAX_MTU = 65535
#: Smallest MTU IPv4 allows (RFC 791: every host takes 68-byte datagrams).
MIN_MTU = 68


def _check_open_args(name: object, peer: object, mtu: object) -> None:
    """Refuse what the kernel would refuse later (or accept wrongly), before any device
    is touched: ValueError with a sentence that says what is wrong."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"TAP name must be a non-empty string, got {name!r}")
    raw = name.encode(errors="replace")
    # Linux's dev_valid_name(): 1-15 bytes, not "." or "..", no '/', ':' or whitespace.
    if len(raw) > 15:
        raise ValueError(f"interface name {name!r} longer than 15 bytes")
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise ValueError(f"{name!r} is not a valid interface name (no '/', ':' or spaces)")
    if not name.isprintable():
        raise ValueError(f"{name!r} is not a valid interface name (unprintable characters)")
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
        raise ValueError(f"mtu must be an integer from {MIN_MTU} to {MAX_MTU}, got {mtu!r}")
    if peer is not None:
        if not isinstance(peer, str):
            raise ValueError(f"peer must be an address/prefix string, got {peer!r}")
        try:
            iface = ipaddress.IPv4Interface(peer)
        except ValueError:
            raise ValueError(
                f"peer {peer!r} is not an IPv4 address with prefix length like 10.0.0.1/24"
            ) from None
        net = iface.network
        broadcast = net.prefixlen < 31 and iface.ip == net.broadcast_address
        if iface.ip.is_multicast or iface.ip.is_unspecified or broadcast:
            raise ValueError(f"peer {peer!r} cannot be an interface address")


def _open_tun(name: str, vnet_hdr: bool, *, multi_queue: bool = False) -> int:
    """Open /dev/net/tun and attach it to TAP ``name`` (created in the thread's netns)."""
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        raise PermissionError(errno.EACCES, f"cannot open {TUN_PATH}: run as root") from None
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"{TUN_PATH} missing: load the tun module (modprobe tun)"
        ) from None
    try:
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        if multi_queue:
            flags |= IFF_MULTI_QUEUE
        try:
            fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
        except PermissionError:
            raise PermissionError(
                errno.EPERM, f"TUNSETIFF {name}: creating a TAP needs CAP_NET_ADMIN (root)"
            ) from None
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise OSError(errno.EBUSY, f"TAP {name} is already open elsewhere") from None
            if e.errno == errno.EINVAL:
                raise OSError(
                    errno.EINVAL, f"TUNSETIFF {name}: a non-TAP interface has this name"
                ) from None
            raise
        if vnet_hdr:
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
            # The kernel may then send us unchecksummed and TSO (up to 64 KiB) frames.
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _configure(name: str, peer: str | None, mtu: int, peer6: str | None = None) -> bytes:
    """Inside the device's namespace: IPv6 off (unless ``peer6``), MTU, kernel-side
    addresses, link up.

    Returns the kernel end's MAC address.
    """
    from pyroute2 import IPRoute

    if peer6 is None:
        # IPv6 off before link up, so the kernel sends no router solicitation / MLD frames.
        write_sysctl_inside(f"net.ipv6.conf.{name}.disable_ipv6", "1")
    else:
        write_sysctl_inside(f"net.ipv6.conf.{name}.disable_ipv6", "0")
        # the stack is a host, never our router; the address is usable at once (no DAD
        # wait: the stack's own DAD still checks its addresses against it)
        write_sysctl_inside(f"net.ipv6.conf.{name}.accept_ra", "0")
        write_sysctl_inside(f"net.ipv6.conf.{name}.accept_dad", "0")
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise OSError(errno.ENODEV, f"TAP {name} not found after TUNSETIFF")
        idx = found[0]
        ipr.link("set", index=idx, mtu=mtu, txqlen=TX_QUEUE_LEN)
        for addr, default_len in ((peer, 32), (peer6, 64)):
            if not addr:
                continue
            ip, _, plen = addr.partition("/")
            try:
                ipr.addr("add", index=idx, address=ip, prefixlen=int(plen or default_len))
            except Exception as e:  # pyroute2 NetlinkError: EEXIST when re-attaching
                if getattr(e, "code", None) != errno.EEXIST:
                    raise
        ipr.link("set", index=idx, state="up")
        link: Any = ipr.get_links(idx)[0]
        mac = link.get("IFLA_ADDRESS") or link.get_attr("IFLA_ADDRESS")
    return bytes.fromhex(mac.replace(":", "")) if mac else b""
