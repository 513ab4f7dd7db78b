"""The two TCPs under test: the stack on a TAP, and the Linux kernel over a veth pair.

Stack: the stack is 10.0.0.2 on TAP ``anptap0`` (kernel end 10.0.0.1, which only carries
frames); the fake host is 10.0.0.3, its packet socket on the TAP's kernel side.

Linux: namespace B holds veth end ``cfb`` with 10.0.1.2/24 and a permanent neighbour entry
10.0.1.3 -> the fake host's MAC; namespace A holds the other end ``cfa`` with no address,
where the fake host's packet socket sits. The kernel's sockets are created in this process
inside B (``Netns.enter``) and driven by the same asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import socket
import struct
from typing import Any

from anp_async import Stack, StackConfig, TcpConfig
from anp_async.nic.netns import Netns, veth_pair
from anp_async.nic.tap import TapNic
from tests.conformance.harness import PEER_MAC, Conn, Listener, PacketWire, Target
from tests.stackutil import fast_tcp

STACK_IP = "10.0.0.2"
STACK_MAC = "02:00:00:00:00:02"
STACK_KERNEL_CIDR = "10.0.0.1/24"
STACK_PEER_IP = "10.0.0.3"
STACK_IP6 = "fd00::2"
TAP = "anptap0"

LINUX_IP = "10.0.1.2"
LINUX_PEER_IP = "10.0.1.3"
VETH_A = "cfa"
VETH_B = "cfb"

#: The stack's TCP settings for conformance runs: short timers (2 MSL = 1 s).
STACK_MSL = 0.5


def stack_tcp_config() -> TcpConfig:
    return fast_tcp(msl=STACK_MSL, rto_initial=0.3, rto_min=0.2)


# ---------------------------------------------------------------------------- stack


class StackConn(Conn, asyncio.Protocol):
    """An asyncio protocol on a stack connection, exposing the :class:`Conn` API."""

    def __init__(self, reading: bool = True, on_made: Any = None) -> None:
        Conn.__init__(self)
        self.transport: asyncio.Transport | None = None
        self._reading = reading
        self._on_made = on_made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self._reading:
            transport.pause_reading()  # type: ignore[attr-defined]
        if self._on_made is not None:
            self._on_made(self)

    def data_received(self, data: bytes) -> None:
        self.data += data
        self._notify()

    def eof_received(self) -> bool:
        self.eof = True
        self._notify()
        return True  # keep the write side open (half-close)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        if exc is not None:
            self.error = exc
        self._notify()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def shutdown_write(self) -> None:
        assert self.transport is not None
        self.transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def start_reading(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()  # type: ignore[attr-defined]


class StackTarget(Target):
    """The stack under test on a fresh TAP in the session's stack namespace."""

    name = "stack"
    ip = STACK_IP
    mac = STACK_MAC
    peer_ip = STACK_PEER_IP

    def __init__(self, ns: Netns, *, offload: bool = False) -> None:
        self.ns = ns
        self.conns: list[StackConn] = []
        #: The TAP with its virtio-net header (checksum offload, TSO), and a batching
        #: receive mode: the configuration a new user gets from ``anp up``, where every
        #: rule of the plain TAP must still hold on the wire.
        self.offload = offload
        if offload:
            self.name = "stack-offload"

    async def start(self) -> None:
        tap = TapNic.open(TAP, peer=STACK_KERNEL_CIDR, netns=self.ns, vnet_hdr=self.offload)
        mode, params = (
            ("coalesce", {"rx_frames": 8, "rx_usecs": 100}) if self.offload else ("interrupt", {})
        )
        self.stack = Stack(
            StackConfig(
                nic=tap,
                ip=f"{STACK_IP}/24",
                # IPv6 beside IPv4 (test_ipv6_nd.py); DAD skipped, a fresh TAP per case
                ip6=f"{STACK_IP6}/64",
                dad_transmits=0,
                mac=STACK_MAC,
                tcp=stack_tcp_config(),
                mode=mode,
                mode_params=params,
            )
        )
        self.stack.start()
        self.stack.arp.add_static(socket.inet_aton(STACK_PEER_IP), bytes.fromhex("020000000003"))
        self.wire = PacketWire(self.ns, TAP, STACK_PEER_IP, STACK_IP, STACK_MAC, vnet=self.offload)

    async def listen(
        self, port: int, *, reading: bool = True, rcvbuf: int | None = None, backlog: int = 16
    ) -> Listener:
        listener = Listener()
        if rcvbuf is not None:
            self.stack.tcp.config.recv_buffer = rcvbuf
            self.stack.tcp.config.window_scale = False

        def factory() -> StackConn:
            c = StackConn(reading, on_made=listener.accepted.put_nowait)
            self.conns.append(c)
            return c

        await self.stack.create_server(factory, STACK_IP, port, backlog=backlog)
        return listener

    def connect(self, port: int) -> asyncio.Task[Conn]:
        async def run() -> Conn:
            c = StackConn()
            self.conns.append(c)
            await self.stack.create_connection(lambda: c, STACK_PEER_IP, port)
            return c

        return asyncio.ensure_future(run())

    def counters(self) -> dict[str, int]:
        st = self.stack.stats()
        out: dict[str, int] = {}
        for layer in ("ip", "tcp"):
            for k, v in st[layer].items():
                if isinstance(v, int):
                    out[f"{layer}.{k}"] = v
        return out

    async def aclose(self) -> None:
        self.wire.close()
        await self.stack.close()


# ---------------------------------------------------------------------------- Linux

SIOCETHTOOL = 0x8946
ETHTOOL_STSO = 0x1F
ETHTOOL_SGSO = 0x24


def _ethtool_off(ifname: str, cmds: tuple[int, ...] = (ETHTOOL_STSO, ETHTOOL_SGSO)) -> None:
    """Turn segmentation offloads off (``ethtool -K IF tso off gso off``), in this netns.

    Otherwise the fake host's packet socket would see the kernel's 64 KiB super-segments
    instead of the segments a real wire would carry.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for cmd in cmds:
            val = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
            ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(val))
            ifr += b"\0" * (40 - len(ifr))
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)


class LinuxEnv:
    """Namespaces A (fake host's side) and B (the kernel under test) joined by a veth."""

    def __init__(self) -> None:
        self.ns_a = Netns.create()
        self.ns_b = Netns.create()
        try:
            veth_pair(self.ns_a, self.ns_b, None, f"{LINUX_IP}/24", VETH_A, VETH_B)
            res = self.ns_b.run(
                [
                    "ip",
                    "neigh",
                    "replace",
                    LINUX_PEER_IP,
                    "lladdr",
                    PEER_MAC,
                    "dev",
                    VETH_B,
                    "nud",
                    "permanent",
                ]
            )
            assert res.returncode == 0, res.stderr
            self.ns_b.run(["ip", "link", "set", "lo", "up"], check=True)
            mac = self.ns_b.run(["cat", f"/sys/class/net/{VETH_B}/address"], check=True)
            self.mac = mac.stdout.strip()
            with self.ns_b.enter():
                _ethtool_off(VETH_B)
            # Namespace A must stay silent: no address, no forwarding, no IPv6.
            self.ns_a.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"], check=True)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            with contextlib.suppress(OSError):
                ns.delete()


class LinuxConn(Conn):
    """A kernel TCP socket in namespace B, read by a background task unless paused."""

    def __init__(self, sock: socket.socket, reading: bool = True) -> None:
        super().__init__()
        self.sock = sock
        self._reader: asyncio.Task[None] | None = None
        self._writes: list[asyncio.Task[None]] = []
        if reading:
            self.start_reading()

    def start_reading(self) -> None:
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read_loop())

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                chunk = await loop.sock_recv(self.sock, 65536)
                if not chunk:
                    self.eof = True
                    self._notify()
                    return
                self.data += chunk
                self._notify()
        except OSError as e:
            self.error = e
            self.lost = True
            self._notify()

    def poll_error(self) -> None:
        """Pick up a pending socket error (ECONNRESET ...) when nobody is reading."""
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err and self.error is None:
            self.error = OSError(err, "socket error")
            self._notify()

    def write(self, data: bytes) -> None:
        self._writes.append(
            asyncio.ensure_future(asyncio.get_running_loop().sock_sendall(self.sock, data))
        )

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.cancel_tasks()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(self.sock.fileno())
            loop.remove_writer(self.sock.fileno())
        self.sock.close()

    def abort(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def cancel_tasks(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        for t in self._writes:
            t.cancel()


class LinuxTarget(Target):
    """The kernel's TCP in namespace B of a :class:`LinuxEnv`."""

    name = "linux"
    ip = LINUX_IP
    peer_ip = LINUX_PEER_IP

    def __init__(self, env: LinuxEnv) -> None:
        self.env = env
        self.mac = env.mac
        self.socks: list[socket.socket] = []
        self.conns: list[LinuxConn] = []
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        self.wire = PacketWire(self.env.ns_a, VETH_A, LINUX_PEER_IP, LINUX_IP, self.mac)

    def _socket(self) -> socket.socket:
        with self.env.ns_b.enter():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        self.socks.append(s)
        return s

    async def listen(
        self, port: int, *, reading: bool = True, rcvbuf: int | None = None, backlog: int = 16
    ) -> Listener:
        s = self._socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((LINUX_IP, port))
        s.listen(backlog)
        listener = Listener()
        loop = asyncio.get_running_loop()

        async def accept_loop() -> None:
            while True:
                c, _ = await loop.sock_accept(s)
                c.setblocking(False)
                self.socks.append(c)
                conn = LinuxConn(c, reading)
                self.conns.append(conn)
                listener.accepted.put_nowait(conn)

        self.tasks.append(asyncio.ensure_future(accept_loop()))
        return listener

    def connect(self, port: int) -> asyncio.Task[Conn]:
        s = self._socket()

        async def run() -> Conn:
            await asyncio.get_running_loop().sock_connect(s, (LINUX_PEER_IP, port))
            conn = LinuxConn(s)
            self.conns.append(conn)
            return conn

        return asyncio.ensure_future(run())

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.env.ns_b.enter():
            for name in ("snmp", "netstat"):
                with open(f"/proc/thread-self/net/{name}") as f:
                    lines = f.read().splitlines()
                for head, vals in zip(lines[::2], lines[1::2], strict=False):
                    proto, _, keys = head.partition(":")
                    for k, v in zip(keys.split(), vals.split(":", 1)[1].split(), strict=False):
                        with contextlib.suppress(ValueError):
                            out[f"{proto}.{k}"] = int(v)
        return out

    async def aclose(self) -> None:
        for conn in self.conns:
            conn.cancel_tasks()
        for t in self.tasks:
            t.cancel()
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        for s in self.socks:
            if s.fileno() < 0:
                continue
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(s.fileno())
                loop.remove_writer(s.fileno())
            with contextlib.suppress(OSError):
                # RST whatever is still open, so no state lingers into the next case.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        self.wire.close()
