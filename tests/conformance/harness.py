"""Conformance harness: scapy plays a remote host on the link of the TCP under test.

The fake host owns an address and a MAC nobody else on the link has. Its frames go out, and
the target's answers come back, through an ``AF_PACKET`` socket opened inside the test's
namespace on the interface that faces the target, read from the asyncio loop the target
stack itself runs on. The kernel that owns that interface never joins the conversation: the
frames are not addressed to its MAC, and it has no address the fake host uses.

Pieces:

- :class:`PacketWire`: the raw socket; answers ARP for the fake host, keeps every IPv4
  packet the target sends to it, and lets a test wait for one that matches (``expect``) or
  check that none comes (``expect_none``).
- :class:`Flow`: the fake host's side of one TCP connection (its sequence numbers, options,
  timestamps), with helpers to open one to a target's listener (``Flow.open``) or to answer
  a target's active open (``Flow.accept``).
- :class:`Target`, :class:`Conn`, :class:`Listener`: what every case drives, implemented by
  ``targets.py`` for the stack (on a TAP) and for the Linux kernel (over a veth pair).
- :func:`raw_tcp`: hand-built segments for the malformed-header cases scapy will not make.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scapy.config import conf
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

conf.verb = 0

__all__ = [
    "ICMP",
    "IP",
    "TCP",
    "Conn",
    "Flow",
    "Listener",
    "PacketWire",
    "Target",
    "flags_of",
    "inet_checksum",
    "raw_tcp",
    "seq_add",
]

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
PACKET_OUTGOING = 4
MASK = 0xFFFFFFFF

#: The fake remote host's MAC on every link (locally administered).
PEER_MAC = "02:00:00:00:00:03"

_FLAG_LETTERS = ((0x02, "S"), (0x10, "A"), (0x01, "F"), (0x04, "R"), (0x08, "P"))


def seq_add(a: int, n: int) -> int:
    """Sequence-number addition modulo 2**32."""
    return (a + n) & MASK


def flags_of(pkt: Any) -> str:
    """The TCP flags of ``pkt`` as a canonical string in the order S, A, F, R, P."""
    fl = int(pkt[TCP].flags)
    return "".join(c for bit, c in _FLAG_LETTERS if fl & bit)


def tcp_options(pkt: Any) -> dict[str, Any]:
    """The TCP options of ``pkt`` as {name: value} (scapy's names: MSS, WScale, ...)."""
    return {name: val for name, val in pkt[TCP].options if name not in ("NOP", "EOL")}


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def raw_tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int = 0,
    flags: int = 0x02,
    window: int = 65535,
    options: bytes = b"",
    payload: bytes = b"",
    data_offset: int | None = None,
    bad_checksum: bool = False,
) -> bytes:
    """A TCP segment built by hand, so headers and options may be malformed on purpose.

    ``data_offset`` (in 32-bit words) defaults to the real header length; ``options`` is
    padded to a multiple of 4 bytes with zeros (EOL) only if ``data_offset`` is not given.
    """
    if data_offset is None:
        if len(options) % 4:
            options += b"\0" * (4 - len(options) % 4)
        data_offset = (20 + len(options)) // 4
    hdr = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & MASK, ack & MASK, data_offset << 4, flags, window, 0, 0
    )
    seg = hdr + options + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    csum = inet_checksum(pseudo + seg)
    if bad_checksum:
        csum ^= 0x5A5A
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


@dataclass
class Seen:
    """One IPv4 packet the target sent to the fake host, with its arrival time."""

    at: float
    pkt: Any


#: ``setsockopt(SOL_PACKET, PACKET_VNET_HDR)``: frames carry a ``struct virtio_net_hdr``.
SOL_PACKET = 263
PACKET_VNET_HDR = 15
_VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
_VNET_NEEDS_CSUM = 0x01
_VNET_GSO_TCPV4 = 1


def _csum_fold(data: bytes) -> int:
    """The ones' complement sum of ``data`` (not complemented), folded to 16 bits."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def wire_frames(vnet: bytes, frame: bytes) -> list[bytes]:
    """What a wire carries for a frame handed over with a virtio-net header: the checksum
    the sender left partial completed, and a TCP super-segment (TSO) cut at ``gso_size``,
    as the kernel's software GSO cuts it before a device without offloads."""
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = _VNET.unpack(vnet)
    if gso_type & 0x7F == _VNET_GSO_TCPV4 and gso_size:
        ihl = (frame[14] & 0x0F) * 4
        l4 = 14 + ihl
        thl = (frame[l4 + 12] >> 4) * 4
        payload = frame[l4 + thl :]
        ident = struct.unpack_from("!H", frame, 18)[0]
        seq = struct.unpack_from("!I", frame, l4 + 4)[0]
        flags_byte = frame[l4 + 13]
        out = []
        for i, off in enumerate(range(0, len(payload), gso_size)):
            chunk = payload[off : off + gso_size]
            last = off + gso_size >= len(payload)
            ip = bytearray(frame[14:l4])
            struct.pack_into("!HH", ip, 2, ihl + thl + len(chunk), (ident + i) & 0xFFFF)
            struct.pack_into("!H", ip, 10, 0)
            struct.pack_into("!H", ip, 10, ~_csum_fold(bytes(ip)) & 0xFFFF)
            tcp = bytearray(frame[l4 : l4 + thl])
            struct.pack_into("!I", tcp, 4, (seq + off) & MASK)
            # FIN and PSH go with the last segment only, CWR with the first (as Linux GSO).
            tcp[13] = flags_byte & ~(0x09 if not last else 0) & ~(0x80 if i else 0)
            struct.pack_into("!H", tcp, 16, 0)
            pseudo = bytes(ip[12:20]) + struct.pack("!BBH", 0, 6, thl + len(chunk))
            struct.pack_into("!H", tcp, 16, ~_csum_fold(pseudo + bytes(tcp) + chunk) & 0xFFFF)
            out.append(frame[:14] + bytes(ip) + bytes(tcp) + chunk)
        return out
    if flags & _VNET_NEEDS_CSUM:
        buf = bytearray(frame)
        # The field holds the pseudo-header sum; the checksum covers csum_start to the end.
        csum = ~_csum_fold(bytes(buf[csum_start:])) & 0xFFFF
        struct.pack_into("!H", buf, csum_start + csum_offset, csum)
        return [bytes(buf)]
    return [frame]


class PacketWire:
    """The fake host's link: a raw packet socket on one interface inside a namespace.

    ``vnet``: the target writes its frames with a virtio-net header (a TAP with offloads).
    The socket then gets that header too (``PACKET_VNET_HDR``) and turns each frame into
    what a wire would carry (:func:`wire_frames`), so every case sees real segments.
    """

    def __init__(
        self,
        ns: Any,
        ifname: str,
        my_ip: str,
        target_ip: str,
        target_mac: str,
        *,
        vnet: bool = False,
    ) -> None:
        with ns.enter():
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            try:
                if vnet:
                    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                sock.bind((ifname, ETH_P_ALL))
            except BaseException:
                sock.close()
                raise
        self.vnet = vnet
        sock.setblocking(False)
        self.sock = sock
        self.my_ip = my_ip
        self.my_mac = PEER_MAC
        self._my_mac_b = bytes.fromhex(PEER_MAC.replace(":", ""))
        self._my_ip_b = socket.inet_aton(my_ip)
        self.target_ip = target_ip
        self.target_mac = target_mac
        self.pending: list[Seen] = []
        self.log: list[Seen] = []
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self.sent = 0

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()

    # ------------------------------------------------------------------ receive

    def _on_readable(self) -> None:
        for _ in range(256):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            frames = [data]
            if self.vnet:
                if len(data) < _VNET.size + 14:
                    continue
                frames = wire_frames(data[: _VNET.size], data[_VNET.size :])
            for frame in frames:
                self._on_frame(frame)

    def _on_frame(self, data: bytes) -> None:
        if len(data) < 14:
            return
        etype = int.from_bytes(data[12:14], "big")
        if etype == ETH_P_ARP:
            self._on_arp(data)
            return
        if etype != ETH_P_IP or data[0:6] != self._my_mac_b:
            return
        pkt = Ether(data)
        if IP not in pkt or pkt[IP].src != self.target_ip:
            return
        seen = Seen(time.monotonic(), pkt[IP])
        self.pending.append(seen)
        self.log.append(seen)
        self._changed.set()

    def _on_arp(self, frame: bytes) -> None:
        arp = Ether(frame)
        if ARP not in arp or arp[ARP].op != 1 or arp[ARP].pdst != self.my_ip:
            return
        reply = Ether(dst=arp[ARP].hwsrc, src=self.my_mac) / ARP(
            op=2, hwsrc=self.my_mac, psrc=self.my_ip, hwdst=arp[ARP].hwsrc, pdst=arp[ARP].psrc
        )
        self._send_frame(bytes(reply))

    # ------------------------------------------------------------------ send

    def _send_frame(self, frame: bytes) -> None:
        self.sent += 1
        assert self.sent < 20000, "runaway sending loop in a conformance case"
        self.sock.send(bytes(_VNET.size) + frame if self.vnet else frame)

    def send(self, ip_pkt: Any) -> None:
        """Send one IPv4 packet (scapy ``IP`` layer, or its bytes) to the target."""
        eth = Ether(dst=self.target_mac, src=self.my_mac, type=ETH_P_IP)
        self._send_frame(bytes(eth) + bytes(ip_pkt))

    def send_tcp_bytes(self, tcp_bytes: bytes, **ip_fields: Any) -> None:
        """Send a hand-built TCP segment (see :func:`raw_tcp`) inside a normal IP header."""
        self.send(IP(src=self.my_ip, dst=self.target_ip, proto=6, **ip_fields) / Raw(tcp_bytes))

    # ------------------------------------------------------------------ wait

    async def expect(
        self, pred: Callable[[Any], bool], timeout: float = 1.5, what: str = "a packet"
    ) -> Any:
        """Wait for (and consume) the first pending packet matching ``pred``."""
        deadline = self._loop.time() + timeout
        while True:
            for i, seen in enumerate(self.pending):
                if pred(seen.pkt):
                    del self.pending[i]
                    return seen.pkt
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                got = [summary(s.pkt) for s in self.pending[-8:]]
                raise AssertionError(f"timed out waiting for {what}; pending: {got}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def expect_timed(
        self, pred: Callable[[Any], bool], timeout: float = 1.5, what: str = "a packet"
    ) -> tuple[float, Any]:
        """Like :meth:`expect`, also returning the packet's arrival time (monotonic)."""
        deadline = self._loop.time() + timeout
        while True:
            for i, seen in enumerate(self.pending):
                if pred(seen.pkt):
                    del self.pending[i]
                    return seen.at, seen.pkt
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def expect_none(
        self, pred: Callable[[Any], bool], within: float = 0.4, what: str = "packet"
    ) -> None:
        """Wait ``within`` seconds and assert no pending packet matches ``pred``."""
        await asyncio.sleep(within)
        bad = [summary(s.pkt) for s in self.pending if pred(s.pkt)]
        assert not bad, f"unexpected {what}: {bad}"

    def drain(self, pred: Callable[[Any], bool] | None = None) -> list[Any]:
        """Consume every pending packet (matching ``pred``) and return them."""
        keep, out = [], []
        for s in self.pending:
            (out if pred is None or pred(s.pkt) else keep).append(s)
        self.pending = keep
        return [s.pkt for s in out]


def summary(pkt: Any) -> str:
    """A one-line description of a packet for assertion messages."""
    if TCP in pkt:
        t = pkt[TCP]
        plen = len(bytes(t.payload))
        return (
            f"TCP {t.sport}->{t.dport} {flags_of(pkt)} seq={t.seq} ack={t.ack} win={t.window} "
            f"len={plen} opts={tcp_options(pkt)}"
        )
    return pkt.summary()


def payload_of(pkt: Any) -> bytes:
    """The TCP payload bytes of ``pkt`` (padding of short frames excluded)."""
    ip = pkt[IP]
    t = pkt[TCP]
    plen = ip.len - ip.ihl * 4 - t.dataofs * 4
    return bytes(t.payload)[:plen]


@dataclass
class Flow:
    """The fake host's end of one TCP connection with the target."""

    wire: PacketWire
    sport: int
    dport: int
    iss: int = field(default_factory=lambda: random.getrandbits(32))
    snd_nxt: int = 0
    rcv_nxt: int = 0
    irs: int = 0
    ts: bool = False
    ts_val: int = 0
    ts_recent: int = 0
    window: int = 65535
    sent: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.snd_nxt = self.iss
        if not self.ts_val:
            self.ts_val = random.randrange(1 << 20, 1 << 30)

    def _opts(self, extra: list[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
        opts: list[tuple[str, Any]] = []
        if self.ts:
            self.ts_val += 1
            opts += [("NOP", None), ("NOP", None), ("Timestamp", (self.ts_val, self.ts_recent))]
        return opts + (extra or [])

    def seg(
        self,
        flags: str = "A",
        seq: int | None = None,
        ack: int | None = None,
        payload: bytes = b"",
        window: int | None = None,
        options: list[tuple[str, Any]] | None = None,
        raw_options: bool = False,
    ) -> Any:
        """A segment of this flow; defaults: SEQ=our SND.NXT, ACK=RCV.NXT, our options."""
        opts = options if raw_options else self._opts(options)
        t = TCP(
            sport=self.sport,
            dport=self.dport,
            seq=self.snd_nxt if seq is None else seq & MASK,
            ack=(self.rcv_nxt if ack is None else ack & MASK) if "A" in flags else 0,
            flags=flags,
            window=self.window if window is None else window,
            options=opts,
        )
        pkt = IP(src=self.wire.my_ip, dst=self.wire.target_ip) / t
        if payload:
            pkt = pkt / Raw(payload)
        return pkt

    def send(self, flags: str = "A", *, advance: bool = True, **kw: Any) -> Any:
        """Send a segment; with ``advance`` (and default SEQ) SND.NXT moves past it."""
        pkt = self.seg(flags, **kw)
        self.wire.send(pkt)
        self.sent.append(pkt)
        if advance and kw.get("seq") is None:
            n = len(kw.get("payload", b"")) + ("S" in flags) + ("F" in flags)
            self.snd_nxt = seq_add(self.snd_nxt, n)
        return pkt

    def mine(self, pkt: Any) -> bool:
        """True if ``pkt`` is a TCP segment of this flow from the target."""
        return TCP in pkt and pkt[TCP].sport == self.dport and pkt[TCP].dport == self.sport

    async def expect(
        self, pred: Callable[[Any], bool] | None = None, timeout: float = 1.5, what: str = ""
    ) -> Any:
        """The next segment of this flow matching ``pred``; absorbs its sequence space."""
        pkt = await self.wire.expect(
            lambda p: self.mine(p) and (pred is None or pred(p)), timeout, what or "a segment"
        )
        self.absorb(pkt)
        return pkt

    async def expect_none(
        self, pred: Callable[[Any], bool] | None = None, within: float = 0.4, what: str = ""
    ) -> None:
        await self.wire.expect_none(
            lambda p: self.mine(p) and (pred is None or pred(p)), within, what or "segment"
        )

    def absorb(self, pkt: Any) -> None:
        """Move RCV.NXT past the target's segment (if in order) and note its timestamp."""
        t = pkt[TCP]
        fl = flags_of(pkt)
        if "R" in fl:
            return
        n = len(payload_of(pkt)) + ("S" in fl) + ("F" in fl)
        if "S" in fl:
            self.irs = t.seq
            self.rcv_nxt = seq_add(t.seq, n)
        elif n and t.seq == self.rcv_nxt:
            self.rcv_nxt = seq_add(t.seq, n)
        ts = tcp_options(pkt).get("Timestamp")
        if ts is not None and self.ts:
            self.ts_recent = ts[0]

    async def collect_data(self, nbytes: int, timeout: float = 3.0) -> bytes:
        """Receive in-order data from the target until ``nbytes``, ACKing each segment."""
        got = bytearray()
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < nbytes:
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, f"only {len(got)} of {nbytes} bytes arrived"
            pkt = await self.wire.expect(
                lambda p: self.mine(p) and len(payload_of(p)) > 0, remaining, "data"
            )
            if pkt[TCP].seq == self.rcv_nxt:
                got += payload_of(pkt)
            self.absorb(pkt)
            self.send("A")
        return bytes(got)

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(
        cls,
        wire: PacketWire,
        dport: int,
        options: list[tuple[str, Any]] | None = None,
        *,
        ts: bool = True,
        window: int = 65535,
        ack: bool = True,
    ) -> tuple[Flow, Any]:
        """Active open from the fake host to a target listener; returns (flow, SYN-ACK).

        Default SYN options: MSS 1460, SACK-permitted, timestamps, window scale 0 (so the
        windows this host advertises are plain byte counts).
        """
        flow = cls(wire, random.randrange(20000, 60000), dport, ts=ts, window=window)
        if options is None:
            options = [("MSS", 1460), ("SAckOK", b""), ("NOP", None), ("WScale", 0)]
        flow.send("S", options=options)
        synack = await flow.expect(lambda p: "S" in flags_of(p), what="SYN-ACK")
        assert flags_of(synack) == "SA", summary(synack)
        assert synack[TCP].ack == flow.snd_nxt, summary(synack)
        if ts and "Timestamp" not in tcp_options(synack):
            flow.ts = False
        if ack:
            flow.send("A")
        return flow, synack

    @classmethod
    async def accept(
        cls,
        wire: PacketWire,
        port: int,
        options: list[tuple[str, Any]] | None = None,
        *,
        window: int = 65535,
        timeout: float = 3.0,
    ) -> tuple[Flow, Any]:
        """Answer the target's SYN to ``port`` with a SYN-ACK; returns (flow, SYN).

        Default SYN-ACK options mirror the SYN's offer: MSS 1460, SACK-permitted and
        timestamps if offered, window scale 0 if offered.
        """
        syn = await wire.expect(
            lambda p: TCP in p and p[TCP].dport == port and flags_of(p) == "S", timeout, "SYN"
        )
        return cls.answer_syn(wire, syn, options, window=window), syn

    @classmethod
    def answer_syn(
        cls,
        wire: PacketWire,
        syn: Any,
        options: list[tuple[str, Any]] | None = None,
        *,
        window: int = 65535,
    ) -> Flow:
        """Answer the target's ``syn`` with a SYN-ACK; returns the flow."""
        port = syn[TCP].dport
        offered = tcp_options(syn)
        flow = cls(wire, port, syn[TCP].sport, window=window, ts="Timestamp" in offered)
        flow.absorb(syn)
        if options is None:
            options = [("MSS", 1460)]
            if "SAckOK" in offered:
                options.append(("SAckOK", b""))
            if "WScale" in offered:
                options += [("NOP", None), ("WScale", 0)]
        flow.send("SA", options=options)
        return flow

    async def handshake_ack(self, timeout: float = 1.5) -> Any:
        """The target's ACK completing its active open (after :meth:`accept`)."""
        return await self.expect(
            lambda p: flags_of(p) in ("A", "AP") and p[TCP].ack == self.snd_nxt, timeout, "ACK"
        )


async def established(
    target: Target,
    port: int,
    options: list[tuple[str, Any]] | None = None,
    *,
    ts: bool = True,
    window: int = 65535,
    reading: bool = True,
    rcvbuf: int | None = None,
) -> tuple[Flow, Conn, Any]:
    """A connection opened by the fake host to a target listener: (flow, conn, SYN-ACK)."""
    listener = await target.listen(port, reading=reading, rcvbuf=rcvbuf)
    flow, synack = await Flow.open(target.wire, port, options, ts=ts, window=window)
    conn = await listener.accept()
    return flow, conn, synack


async def established_active(target: Target, port: int) -> tuple[Flow, Conn, Any]:
    """A connection opened by the target toward the fake host: (flow, conn, SYN)."""
    task = target.connect(port)
    flow, syn = await Flow.accept(target.wire, port)
    await flow.handshake_ack()
    conn = await asyncio.wait_for(task, 3.0)
    return flow, conn, syn


async def check_alive(flow: Flow, conn: Conn, tag: bytes = b"alive") -> None:
    """The connection still works: new data is ACKed and delivered to the application."""
    before = len(conn.data)
    flow.send("PA", payload=tag)
    await flow.expect(lambda p: p[TCP].ack == flow.snd_nxt, what="ACK of new data")
    got = await conn.wait_data(before + len(tag))
    assert got[before:] == tag, got


class Conn:
    """The application's end of one connection on the target (stack or Linux)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.lost = False
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()

    async def wait_for(self, cond: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``cond()`` holds or ``timeout``; returns ``cond()``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
        return True

    async def wait_data(self, n: int, timeout: float = 2.0) -> bytes:
        """The data delivered so far, once it is at least ``n`` bytes (or at timeout)."""
        await self.wait_for(lambda: len(self.data) >= n or self.error is not None, timeout)
        return bytes(self.data)

    async def wait_eof(self, timeout: float = 2.0) -> bool:
        return await self.wait_for(lambda: self.eof, timeout)

    async def wait_error(self, timeout: float = 2.0) -> BaseException | None:
        await self.wait_for(lambda: self.error is not None, timeout)
        return self.error

    # implemented by the targets
    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def shutdown_write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def start_reading(self) -> None:
        raise NotImplementedError


class Listener:
    """A listening port on the target; accepted connections queue up here."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[Conn] = asyncio.Queue()

    async def accept(self, timeout: float = 2.0) -> Conn:
        return await asyncio.wait_for(self.accepted.get(), timeout)


class Target:
    """A TCP implementation under test, reachable from the fake host through ``wire``."""

    name: str
    ip: str
    mac: str
    peer_ip: str
    wire: PacketWire

    async def listen(
        self, port: int, *, reading: bool = True, rcvbuf: int | None = None, backlog: int = 16
    ) -> Listener:
        raise NotImplementedError

    def connect(self, port: int) -> asyncio.Task[Conn]:
        """Active open toward the fake host's ``port``; the task ends connected or failed."""
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        """Drop/error counters by name (the stack's stats, Linux's SNMP MIB)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError
