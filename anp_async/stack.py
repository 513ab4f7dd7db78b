"""The Stack: wires a NIC through a receive mode into the protocol layers and the transports.

One event loop, no threads, no queues between layers: a receive mode hands a batch of
frames to :meth:`Stack._rx_batch`, which walks each frame down Ethernet -> ARP | IPv4 ->
ICMP | UDP | TCP with direct calls, and flushes TCP output once at the end of the batch
(one cumulative ACK per batch, like GRO). Transmit is the reverse: the upper layer hands
``send_ip`` a list of buffers (headers plus a view of the payload), and the NIC writes them
with scatter-gather. The protocol code in ``proto/`` never reads a clock; this module owns
the clock (``loop.time()``) and the timers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from .counters import Counters
from .loopback import Loopback
from .modes import make_mode
from .modes.base import RxMode
from .modes.timergate import TimerGate
from .nic.base import Buffer, Nic
from .nic.offload import VnetOffload
from .nic.tap import MAX_QUEUES, TX_QUEUE_LEN
from .nic.vnet import F_DATA_VALID, F_NEEDS_CSUM, GSO_TCPV4, PLAIN_HEADER, VNET_HDR_LEN
from .proto import arp as arp_proto
from .proto import icmp
from .proto import ipv4 as ip_proto
from .proto.errors import ParseError
from .proto.ethernet import (
    BROADCAST_MAC,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    build_ethernet_header,
    mac_to_bytes,
    mac_to_str,
    parse_ethernet,
)
from .proto.ipv6 import NH_ICMPV6, IPv6Header, ip6_to_bytes
from .proto.numbers import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP
from .proto.tcp.config import TcpConfig
from .proto.tcp.fastpath import TX_NOT_TEMPLATED, TX_SENT, TX_TSO, HeaderTemplate
from .proto.tcp.segment import TcpSegment, build_tcp_header, build_tcp_header_partial
from .stack_ipv6 import Ipv6Layer, parse_prefix6
from .transport.ping import PingLayer
from .transport.resolve import resolve_ip
from .transport.tcp import TcpLayer
from .transport.udp import UdpLayer

if TYPE_CHECKING:
    from .transport.server import Server

log = logging.getLogger(__name__)


#: The reassembler's drop counters, reported in ``stats()["ip"]`` as ``reassembly_<name>``
#: (its other counters are the stack's own ``reassembled`` and ``reassembly_timeouts``).
_REASSEMBLY_DROPS = (
    "duplicates",
    "overlaps",
    "too_big",
    "bad_fragment",
    "inconsistent",
    "evicted",
    "no_memory",
)


def _random_mac() -> bytes:
    # Locally administered (bit 1) unicast (bit 0 clear) address.
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return bytes(b)


#: How far receive-window autotuning may grow a connection's window when the NIC offloads
#: (TcpConfig.recv_buffer_max; 0 in the config means this).
OFFLOAD_RECV_BUFFER_MAX = 4 * 1024 * 1024


@dataclass
class StackConfig:
    """Everything a :class:`Stack` needs: the NIC, its addresses and the receive mode."""

    nic: Nic | None = None
    ip: str = "10.0.0.2/24"
    mac: str | None = None
    gateway: str | None = None
    #: An IPv6 address with prefix length (``"fd00::2/64"``): the stack speaks both
    #: families; a link-local address from the MAC comes with it.
    ip6: str | None = None
    #: The IPv6 default router (else one learnt from Router Advertisements).
    gateway6: str | None = None
    #: Duplicate Address Detection probes per IPv6 address (RFC 4862; 0 skips DAD).
    dad_transmits: int = 1
    mtu: int | None = None
    mode: str = "interrupt"
    mode_params: dict[str, int] = field(default_factory=dict)
    tcp: TcpConfig = field(default_factory=TcpConfig)
    pcap: str | None = None
    #: Send ICMP port unreachable for datagrams to closed UDP ports (RFC 1122 4.1.3.1).
    icmp_port_unreachable: bool = True
    #: Receive queues, one worker process each (RSS across cores). A :class:`Stack` is one
    #: process, so it takes only 1; for more, ``anp_async.mq.MultiQueueHost.from_stack_config``
    #: runs one stack per queue of a multi-queue TAP with every other field of this config.
    queues: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field (the NIC's presence excepted); ValueError saying what is wrong.

        :class:`Stack` calls it again, so a config changed after construction is checked
        before anything is opened.
        """
        if not isinstance(self.ip, str):
            raise ValueError(f"ip must be a string like '10.0.0.2/24', got {self.ip!r}")
        addr, sep, prefix = self.ip.partition("/")
        ip_b = ip_proto.ip_to_bytes(addr)
        if sep and not (prefix.isdigit() and 0 <= int(prefix) <= 32):
            raise ValueError(f"ip {self.ip!r}: the prefix length must be 0..32")
        if ip_b[0] >= 224 or ip_b == bytes(4):
            raise ValueError(f"ip {self.ip!r} cannot be an interface address")
        if self.mac is not None:
            if not isinstance(self.mac, str | bytes):
                raise ValueError(f"mac must be a string like '02:00:00:00:00:02', got {self.mac!r}")
            if mac_to_bytes(self.mac)[0] & 1:
                raise ValueError(f"mac {self.mac!r} is a multicast address, not a station's")
        if self.gateway is not None:
            if not isinstance(self.gateway, str):
                raise ValueError(f"gateway must be an address string, got {self.gateway!r}")
            ip_proto.ip_to_bytes(self.gateway)
        if self.mtu is not None and (
            isinstance(self.mtu, bool)
            or not isinstance(self.mtu, int)
            or not 68 <= self.mtu <= 65535
        ):
            # RFC 791: every IPv4 host takes 68-byte datagrams; 65535 is the largest datagram.
            raise ValueError(f"mtu must be an integer from 68 to 65535, got {self.mtu!r}")
        if not isinstance(self.mode, str):
            raise ValueError(f"mode must be a receive-mode name, got {self.mode!r}")
        if not isinstance(self.mode_params, dict):
            raise ValueError(f"mode_params must be a dict, got {self.mode_params!r}")
        make_mode(self.mode, **self.mode_params)  # ValueError for a bad name or value
        if not isinstance(self.tcp, TcpConfig):
            raise ValueError(f"tcp must be a TcpConfig, got {self.tcp!r}")
        if self.ip6 is not None:
            if not isinstance(self.ip6, str):
                raise ValueError(f"ip6 must be a string like 'fd00::2/64', got {self.ip6!r}")
            parse_prefix6(self.ip6)
        if self.gateway6 is not None:
            ip6_to_bytes(self.gateway6)
        if isinstance(self.dad_transmits, bool) or not isinstance(self.dad_transmits, int):
            raise ValueError(f"dad_transmits must be an integer, got {self.dad_transmits!r}")
        if not 0 <= self.dad_transmits <= 10:
            raise ValueError(f"dad_transmits must be 0..10, got {self.dad_transmits}")
        if self.pcap is not None and not isinstance(self.pcap, str):
            raise ValueError(f"pcap must be a file name, got {self.pcap!r}")
        if isinstance(self.queues, bool) or not isinstance(self.queues, int):
            raise ValueError(f"queues must be an integer, got {self.queues!r}")
        if not 1 <= self.queues <= MAX_QUEUES:
            raise ValueError(f"queues must be 1..{MAX_QUEUES}, got {self.queues}")


# virtio-net flags of a received frame whose transport checksum need not be verified
# (as VnetOffload.rx_csum_trusted; the receive fast path reads them inline).
_CSUM_TRUSTED = F_NEEDS_CSUM | F_DATA_VALID

_PING_PATTERN = bytes(range(256)) * 256  # 64 KiB of 0, 1, ..., 255, ...


def _ping_payload(size: int) -> bytes:
    """The echo payload: a counting pattern, like ping(8)'s default fill."""
    if size > len(_PING_PATTERN):
        raise ValueError(f"ping payload of {size} bytes is larger than an IPv4 datagram")
    return _PING_PATTERN[:size]


class _OffloadDatagram(list[Buffer]):
    """The buffers of a datagram that needs its virtio-net header (a TSO super-segment or
    a partial checksum), kept with it while ARP resolves the next hop."""

    __slots__ = ("vnet",)

    def __init__(self, parts: list[Buffer], vnet: bytes) -> None:
        super().__init__(parts)
        self.vnet = vnet


@dataclass(slots=True)
class _PendingPing:
    """An echo request waiting for its reply."""

    future: asyncio.Future[float]
    dst: bytes
    sent: float  # time.perf_counter() when sent


class Stack:
    """A userspace TCP/IP stack on one NIC. Use as ``async with Stack(config) as stack``."""

    def __init__(self, config: StackConfig) -> None:
        if config.nic is None:
            raise ValueError("StackConfig.nic is required (a TapNic, a Wire end, ...)")
        if not isinstance(config.nic, Nic):
            raise ValueError(f"StackConfig.nic must be a Nic, got {config.nic!r}")
        config.validate()
        if config.queues != 1:
            raise ValueError(
                f"StackConfig(queues={config.queues}): a Stack is one process on one queue; "
                "run one stack per queue with anp_async.mq.MultiQueueHost.from_stack_config("
                "config, tap=...) (or anp up --queues N)"
            )
        self.config = config
        nic: Nic = config.nic
        if config.pcap:
            from .nic.pcap import PcapNic

            nic = PcapNic(nic, config.pcap)
        self.nic = nic
        addr, _, prefix = config.ip.partition("/")
        self.ip_b = ip_proto.ip_to_bytes(addr)
        self.ip = addr
        self.prefix_len = int(prefix) if prefix else 24
        self.mac_b = mac_to_bytes(config.mac) if config.mac else _random_mac()
        self.mac = mac_to_str(self.mac_b)
        self.mtu = config.mtu or nic.mtu
        gw = ip_proto.ip_to_bytes(config.gateway) if config.gateway else None
        self.iface = ip_proto.Interface(self.ip_b, self.prefix_len, gw)
        # A 64 KiB datagram is 45 fragments: hold enough of them while ARP resolves
        # (Linux bounds its queue by bytes, unres_qlen_bytes).
        self.arp = arp_proto.ArpTable(self.ip_b, self.mac_b, hold_per_ip=64)
        self.ip_ids = ip_proto.IdGenerator()
        self.reassembler = ip_proto.Reassembler()
        self.eth_counters = Counters()
        self.ip_counters = Counters()
        self.icmp_counters = Counters()
        self._eth_headers: dict[tuple[bytes, int], bytes] = {}
        # IPv4 destination -> (next hop, broadcast?): the interface's prefix and gateway
        # are fixed at construction, so a route once found stays right (bounded like above).
        self._routes: dict[bytes, tuple[bytes, bool]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._mode: RxMode | None = None
        #: Counters of receive modes switched away from (``stats()["mode"]["totals_all_modes"]``).
        self._mode_totals: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._pings: dict[tuple[int, int], _PendingPing] = {}
        self._ping_ident = random.getrandbits(16)
        self._ping_seq = 0
        #: Callbacks told when ARP gives up on a next hop: f(next_hop_ip_bytes).
        self._unreachable_listeners: list[Callable[[bytes], None]] = []
        #: The NIC puts a virtio-net header in front of every frame (a TAP opened with
        #: ``vnet_hdr=True``): checksum offload both ways and TSO/GSO super-segments.
        self.vnet_hdr = bool(getattr(nic, "vnet_hdr", False))
        #: True while the frame being processed has a transport checksum the kernel left
        #: partial or already verified: TCP and UDP then skip verifying it.
        self.rx_csum_trusted = False
        #: Checksum offload and TSO decisions for this NIC (``stats()["offload"]``).
        self.offload = VnetOffload(self.vnet_hdr)
        #: The virtio-net header of a templated TCP/IPv4 segment (checksum left partial).
        self._vnet_tcp = self.offload.tcp_header(0, 0, 0)[0]
        tcp_cfg = config.tcp
        if self.offload.tso_max and not tcp_cfg.tso_max:
            tcp_cfg = dataclasses.replace(tcp_cfg, tso_max=self.offload.tso_max)
        if self.offload.tso_max and not tcp_cfg.recv_buffer_max:
            # The kernel hands over 64 KiB super-segments: a 256 KiB window holds four.
            # Let receive-window autotuning grow it (Linux's tcp_rmem[2] is 6 MiB).
            tcp_cfg = dataclasses.replace(tcp_cfg, recv_buffer_max=OFFLOAD_RECV_BUFFER_MAX)
        #: The IPv6 side (None without an IPv6 address).
        self.v6: Ipv6Layer | None = None
        if config.ip6:
            if self.mtu < 1280:
                # RFC 8200 (5): every link that carries IPv6 has an MTU of 1280 or more
                raise ValueError(f"IPv6 needs an MTU of at least 1280, the link has {self.mtu}")
            self.v6 = Ipv6Layer(self, config.ip6, config.gateway6, dad_transmits=config.dad_transmits)
        self.udp = UdpLayer(self)
        #: Ping sockets (ICMP echo endpoints by identifier), apart from the stack's own pings.
        self.ping_sockets = PingLayer(self, self._ping_ident)
        self.tcp = TcpLayer(self, tcp_cfg)
        #: True while a receive batch is processed (TCP output waits for its end).
        self.in_rx = False
        #: The clock when the current (or last) receive batch began.
        self.rx_now = 0.0
        #: The established-connection fast path (proto/tcp/fastpath.py): frames that fit
        #: the header prediction skip the layer-by-layer parse, segments of an
        #: established connection go out through its header template. Same answers
        #: either way; ``anp trace`` turns it off so that every frame walks the layers
        #: it watches.
        self.fast_path = True
        self._closed = False
        #: Holds TCP timers back while frames wait unread (modes/timergate.py); made
        #: by start() on the running loop.
        self.timer_gate: TimerGate | None = None
        #: Frames to our own MAC: traffic to our own address (loopback.py); by start().
        self.loopback: Loopback | None = None

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Stack:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start receiving on the running loop in the configured mode."""
        self.loop = asyncio.get_running_loop()
        self._mode = make_mode(self.config.mode, **self.config.mode_params)
        self._mode.start(self.loop, self.nic, self._rx_batch)
        self.timer_gate = TimerGate(
            self.loop, self._rx_waiting, lambda: self.nic.stats.rx_frames, TX_QUEUE_LEN
        )
        self.loopback = Loopback(self.loop, self._rx_batch)
        if self.v6 is not None:
            self.v6.start()
        log.info(
            "stack %s/%d mac %s up, mode %s %s",
            self.ip, self.prefix_len, self.mac, self._mode.name, self._mode.params(),
        )  # fmt: skip

    async def close(self, linger: float = 2.0) -> None:
        """Stop the stack: let closing connections deliver (up to ``linger`` seconds),
        then abort what is left, stop receiving and close the NIC.

        The linger is what the kernel gives a closed socket: data and FIN written before
        ``close()`` still reach the peer after the application has moved on.
        """
        if self._closed:
            return
        deadline = self.now() + linger if self.loop is not None else 0.0
        while self.loop is not None and self.tcp.busy() and self.now() < deadline:
            await asyncio.sleep(0.01)
        self._closed = True
        log.info("stack %s closing, %d TCP connections to abort", self.ip, len(self.tcp.conns))
        self.tcp.close_all()
        self.udp.close_all()
        self.ping_sockets.close_all()
        # Let connection_lost callbacks scheduled by the aborts run.
        await asyncio.sleep(0)
        if self._mode is not None:
            self._mode.stop()
        if self.loopback is not None:
            self.loopback.close()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for pending in self._pings.values():
            if not pending.future.done():
                pending.future.cancel()
        if self.v6 is not None:
            self.v6.cancel_pings()
        self.nic.close()

    def now(self) -> float:
        """The stack's clock: the event loop's monotonic time in seconds."""
        assert self.loop is not None
        return self.loop.time()

    @property
    def icmp_port_unreachable(self) -> bool:
        """Answer datagrams to closed UDP ports with ICMP port unreachable."""
        return self.config.icmp_port_unreachable

    # ------------------------------------------------------------------ modes

    @property
    def mode_name(self) -> str:
        return self._mode.name if self._mode else self.config.mode

    @property
    def mode_params(self) -> dict[str, int]:
        return self._mode.params() if self._mode else dict(self.config.mode_params)

    def set_mode(self, name: str | RxMode, **params: int) -> None:
        """Switch the receive mode while running; frames already read are delivered first.

        ``name`` is one of ``modes.MODES`` with its parameters, or a mode object -- an
        :class:`~anp_async.modes.RxMode` subclass of your own (examples/custom_mode.py).
        """
        if isinstance(name, RxMode):
            if params:
                raise ValueError("a mode object takes its parameters in its constructor")
            new = name
        else:
            new = make_mode(name, **params)  # validate before stopping the old one
        assert self.loop is not None, "set_mode() needs a started stack"
        if self._mode is not None:
            self._mode.stop()
            self._retired_mode_stats(self._mode)
        if self._mode is not None:
            log.info("mode %s %s -> %s %s", self._mode.name, self._mode.params(),
                     new.name, new.params())  # fmt: skip
        self._mode = new
        self.config.mode = new.name
        self.config.mode_params = new.params() if isinstance(name, RxMode) else dict(params)
        new.start(self.loop, self.nic, self._rx_batch)

    def _retired_mode_stats(self, mode: RxMode) -> None:
        acc = self._mode_totals
        for k, v in mode.stats.as_dict().items():
            acc[k] = acc.get(k, 0) + v

    # ---------------------------------------------------------------- receive

    def _rx_waiting(self) -> bool:
        mode = self._mode
        return mode is not None and mode.rx_waiting()

    def _rx_batch(self, frames: list[bytes]) -> None:
        """Process a batch of frames from the receive mode, then flush TCP once."""
        self.in_rx = True
        # One clock read per batch (as Linux stamps a NAPI poll): TCP input takes the
        # batch's time instead of reading the loop's clock per segment.
        self.rx_now = self.now()
        try:
            if self.vnet_hdr:
                self._rx_vnet(frames)
            elif self.fast_path:
                fast = self.tcp.rx_fast
                echo = self._rx_echo
                for frame in frames:
                    if type(frame) is bytes and fast(frame, 0, False):
                        self.eth_counters["rx_frames"] += 1
                        self.ip_counters["rx_packets"] += 1
                    elif type(frame) is not bytes or not echo(frame, 0):
                        self._rx_frame(frame)
            else:
                for frame in frames:
                    self._rx_frame(frame)
        finally:
            self.in_rx = False
            self.rx_csum_trusted = False
            self.tcp.flush_dirty()

    def _rx_vnet(self, frames: list[bytes]) -> None:
        """Frames that start with a virtio-net header: note what the kernel left undone."""
        rx = self._rx_frame
        trusted = self.offload.rx_csum_trusted
        fast = self.tcp.rx_fast if self.fast_path else None
        echo = self._rx_echo
        for frame in frames:
            if fast is not None and type(frame) is bytes and len(frame) > VNET_HDR_LEN:
                # The header prediction takes a frame the kernel handed over whole or as
                # one GRO/TSO super-segment of TCP/IPv4 (its headers are the whole's, valid
                # as they stand), its transport checksum vouched for or not by the flags.
                gso = frame[1]
                if (not gso or gso == GSO_TCPV4) and fast(
                    frame, VNET_HDR_LEN, bool(frame[0] & _CSUM_TRUSTED)
                ):
                    self.eth_counters["rx_frames"] += 1
                    self.ip_counters["rx_packets"] += 1
                    if gso:
                        self.offload.counters["gso_frames_received"] += 1
                    continue
                if not gso and echo(frame, VNET_HDR_LEN):
                    continue
            ok = trusted(frame)
            if ok is None:
                continue  # too short for the header (counted)
            self.rx_csum_trusted = ok
            rx(memoryview(frame)[VNET_HDR_LEN:])

    def _rx_echo(self, frame: bytes, off: int) -> bool:
        """The ping fast path (``icmp.predict_echo_request``): a plain Echo Request to us
        is answered without the layer-by-layer parse, with the same counters and the
        same reply; False (nothing done) for any other frame."""
        got = icmp.predict_echo_request(frame, off, self.mac_b, self.ip_b)
        if got is None:
            return False
        src, message = got
        self.eth_counters["rx_frames"] += 1
        self.ip_counters["rx_packets"] += 1
        c = self.icmp_counters
        c["rx_messages"] += 1
        c["echo_requests"] += 1
        self._send_echo_reply(src, icmp.echo_reply_for(message))
        return True

    def _send_echo_reply(self, dst: bytes, reply: bytes) -> None:
        try:
            self.send_ip(dst, IPPROTO_ICMP, [reply])
        except OSError:
            # The sender is off-link and the stack has no gateway: nothing to answer with.
            self.icmp_counters.inc("echo_reply_no_route")
            return
        self.icmp_counters["echo_replies_sent"] += 1

    def _rx_frame(self, frame: Buffer) -> None:
        try:
            dst, src, ethertype, payload = parse_ethernet(frame)
        except ParseError as e:
            self.eth_counters.inc(e.reason)
            return
        if dst != self.mac_b and dst != BROADCAST_MAC and not (
            self.v6 is not None and self.v6.accepts_mac(dst)
        ):
            self.eth_counters.inc("not_for_us")
            return
        self.eth_counters["rx_frames"] += 1
        if ethertype == ETH_P_IP:
            self._rx_ipv4(payload, src)
        elif ethertype == ETH_P_ARP:
            self._rx_arp(payload)
        elif ethertype == ETH_P_IPV6:
            if self.v6 is not None:
                self.v6.input(payload, src, dst[0] & 1 == 1)
            else:
                self.eth_counters.inc("ipv6_ignored")
        else:
            self.eth_counters.inc("unknown_ethertype")

    def _rx_arp(self, payload: memoryview) -> None:
        try:
            pkt = arp_proto.parse_arp(payload)
        except ParseError as e:
            self.eth_counters.inc("arp_" + e.reason if not e.reason.startswith("arp") else e.reason)
            return
        to_send, released = self.arp.on_arp(pkt, self.now())
        for dst_mac, arp_payload in to_send:
            self.send_frame(dst_mac, ETH_P_ARP, [arp_payload])
        for dst_mac, held in released:
            parts = cast("list[Buffer]", held)  # what send_ip handed the hold queue
            vnet = parts.vnet if isinstance(parts, _OffloadDatagram) else None
            self.send_frame(dst_mac, ETH_P_IP, parts, vnet)
        self._arm_arp_timer()

    def _rx_ipv4(self, payload: memoryview, src_mac: bytes) -> None:
        ipc = self.ip_counters
        try:
            hdr, data = ip_proto.parse_ipv4(payload)
        except ParseError as e:
            ipc.inc(e.reason)
            return
        dst = hdr.dst
        if dst != self.ip_b and not self.iface.is_broadcast(dst):
            ipc.inc("not_for_us")
            return
        ipc["rx_packets"] += 1
        if hdr.is_fragment:
            whole = self.reassembler.add(hdr, data, self.now())
            self.arm_timer("reasm", self.reassembler.next_deadline(), self._on_reasm_timer)
            if whole is None:
                return
            ipc.inc("reassembled")
            self.rx_csum_trusted = False  # the last fragment's offload flags say nothing
            data = memoryview(whole)
        proto = hdr.proto
        if proto == IPPROTO_TCP:
            self.tcp.input(hdr, data)
        elif proto == IPPROTO_UDP:
            self.udp.input(hdr, data, payload)
        elif proto == IPPROTO_ICMP:
            self._rx_icmp(hdr, data)
        else:
            ipc.inc("unknown_protocol")

    def _rx_icmp(self, hdr: ip_proto.IPv4Header, data: memoryview) -> None:
        c = self.icmp_counters
        try:
            msg = icmp.parse_icmp(data)
        except ParseError as e:
            c.inc(e.reason)
            return
        c.inc("rx_messages")
        if msg.type == icmp.ECHO_REQUEST:
            if hdr.dst != self.ip_b:
                c.inc("echo_to_broadcast_ignored")  # like Linux's icmp_echo_ignore_broadcasts
                return
            c.inc("echo_requests")
            # RFC 792: the reply carries the request's identifier, sequence and data.
            self._send_echo_reply(hdr.src, icmp.build_echo_reply_from(msg))
        elif msg.type == icmp.ECHO_REPLY:
            pending = self._pings.pop((msg.ident, msg.seq), None)
            if pending is None or pending.future.done():
                if not self.ping_sockets.input(hdr, msg, data):
                    c.inc("echo_reply_unmatched")
                return
            c.inc("echo_replies")
            pending.future.set_result(time.perf_counter() - pending.sent)
        elif msg.type in (icmp.DEST_UNREACH, icmp.TIME_EXCEEDED):
            try:
                quoted, first8 = icmp.parse_icmp_error(msg)
            except ParseError as e:
                c.inc(e.reason)
                return
            c.inc("errors_received")
            if quoted.src != self.ip_b:
                c.inc("error_not_ours")
                return
            if quoted.proto == IPPROTO_UDP:
                self.udp.icmp_error(msg.type, msg.code, quoted, first8)
            elif quoted.proto == IPPROTO_TCP:
                self.tcp.icmp_error(msg.type, msg.code, quoted, first8)
        else:
            c.inc("other_types")

    # --------------------------------------------------------------- transmit

    def send_frame(
        self, dst_mac: bytes, ethertype: int, parts: list[Buffer], vnet: bytes | None = None
    ) -> None:
        """One Ethernet frame to ``dst_mac``: its header, then ``parts`` (behind the
        virtio-net header ``vnet``, or a plain one, when the NIC takes one)."""
        key = (dst_mac, ethertype)
        hdr = self._eth_headers.get(key)
        if hdr is None:
            hdr = build_ethernet_header(dst_mac, self.mac_b, ethertype)
            if len(self._eth_headers) < 4096:
                self._eth_headers[key] = hdr
        frame = [vnet or PLAIN_HEADER, hdr, *parts] if self.vnet_hdr else [hdr, *parts]
        if dst_mac == self.mac_b and self.loopback is not None:
            self.loopback.send(frame)  # to our own address: back in, not out
        else:
            self.nic.send(frame)

    def send_tcp(self, dst: bytes, seg: TcpSegment, mss: int = 0, dscp: int = 0) -> bool:
        """Send one TCP segment to ``dst``; True when the NIC is to cut it at ``mss`` (TSO).

        With the virtio-net header the checksum is left partial for the kernel to finish
        and the offload decides whether the segment is a super-segment; without it the
        header carries the full checksum. ``dscp``: the upper six bits of the TOS byte
        (traffic class) the socket asked for, beside the connection's ECN field. Raises
        OSError(ENETUNREACH) like ``send_ip``.
        """
        payload = seg.payload
        off = self.offload
        if len(dst) == 16:
            v6 = self.v6
            if v6 is None:
                raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
            vnet: bytes | None = None
            tso = False
            if off.enabled:  # checksum offload and TSO6, as for IPv4
                hdr = build_tcp_header_partial(seg, v6.ip_b, dst)
                vnet, tso = off.tcp_header(len(hdr), len(payload), mss, v6=True)
            else:
                hdr = build_tcp_header(seg, v6.ip_b, dst)
            # RFC 3168 (5): the ECN field is the traffic class's low two bits.
            v6.send(
                dst, IPPROTO_TCP, [hdr, payload] if payload else [hdr], src=v6.ip_b,
                vnet=vnet, traffic_class=dscp | seg.ecn,
            )  # fmt: skip
            return tso
        # RFC 3168 (5): the connection chose the ECN field (ECT(0) on new data).
        tos = dscp | seg.ecn
        if off.enabled:
            hdr = build_tcp_header_partial(seg, self.ip_b, dst)
            vnet, tso = off.tcp_header(len(hdr), len(payload), mss)
            self.send_ip(
                dst, IPPROTO_TCP, [hdr, payload] if payload else [hdr], vnet=vnet, tos=tos
            )
            return tso
        hdr = build_tcp_header(seg, self.ip_b, dst)
        self.send_ip(dst, IPPROTO_TCP, [hdr, payload] if payload else [hdr], tos=tos)
        return False

    def tcp_template(self, dst: bytes, sport: int, dport: int) -> HeaderTemplate | None:
        """A header template for the IPv4 connection ``sport`` -> ``dst``:``dport``
        (:class:`~anp_async.proto.tcp.fastpath.HeaderTemplate`), None for IPv6, a
        broadcast address or no route. Its link part is filled in at the first send."""
        if len(dst) != 4:
            return None
        try:
            route = self._routes.get(dst) or self._route(dst)
        except OSError:
            return None
        if route[1]:
            return None
        return HeaderTemplate(
            bytes(14), self.ip_b, dst, sport, dport,
            partial=self.offload.enabled, mtu=self.mtu, next_hop=route[0], arp_version=-1,
        )  # fmt: skip

    def send_templated(self, tpl: HeaderTemplate, seg: TcpSegment, mss: int, now: float) -> int:
        """Send ``seg`` with its connection's header template: ``TX_SENT``, or ``TX_TSO``
        when the NIC is to cut it at ``mss`` (as :meth:`send_tcp`'s True);
        ``TX_NOT_TEMPLATED`` (0: nothing sent, nothing counted) when the segment needs
        :meth:`send_tcp` instead: not template-shaped (options beyond the timestamp, ECN)
        or the neighbour not resolved. The template follows the ARP table: a changed or
        expired entry is looked up again (the invalidation hook), as ``send_ip`` would
        for every datagram.
        """
        if tpl.arp_version != self.arp.version or now >= tpl.expires:
            got = self.arp.lookup_until(tpl.next_hop, now)
            if got is None:
                return TX_NOT_TEMPLATED  # send_ip holds the datagram and asks ARP
            mac, expires = got
            tpl.relink(build_ethernet_header(mac, self.mac_b, ETH_P_IP), self.arp.version,
                       expires)  # fmt: skip
        hdr = tpl.header(seg, self.ip_ids.next, mss)
        if hdr is None:
            return TX_NOT_TEMPLATED
        payload = seg.payload
        self.ip_counters["tx_packets"] += 1
        sent = TX_SENT
        if self.vnet_hdr:
            # The virtio-net header as a part of its own, as send_frame sends it (what
            # PcapNic leaves out): the kernel completes the partial checksum, and cuts a
            # super-segment (the template took it only with mss and offload).
            vnet = self._vnet_tcp
            if mss:
                # The template took more than one segment's payload only as TSO (its rule,
                # RFC 6691's: the MSS counts data behind a 20-byte header).
                thl = len(hdr) - tpl.ip_offset - 20
                if len(payload) > mss + 20 - thl:
                    vnet = self.offload.tcp_header(thl, len(payload), mss)[0]
                    sent = TX_TSO
            self.nic.send([vnet, hdr, payload] if payload else [vnet, hdr])
        else:
            self.nic.send([hdr, payload] if payload else [hdr])
        return sent

    def send_ip(
        self,
        dst: bytes,
        proto: int,
        parts: list[Buffer],
        *,
        ttl: int = 64,
        vnet: bytes | None = None,
        tos: int = 0,
    ) -> None:
        """Send one IPv4 datagram whose payload is the concatenation of ``parts``.

        Raises OSError(ENETUNREACH) when no route leads to ``dst``. A datagram larger than
        the MTU is fragmented (TCP never needs it: its segments fit the MSS), unless
        ``vnet`` is given: then it is a virtio-net header (only for a NIC with
        ``vnet_hdr``) asking the kernel to segment it (TSO) or finish its checksum.
        A 16-byte ``dst`` goes out as IPv6 (``ttl`` is then the hop limit, ``tos`` the
        traffic class).
        """
        if len(dst) == 16:
            if self.v6 is None:
                self.ip_counters.inc("no_route")
                raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
            # TCP and UDP checksums were computed with our configured address
            src = None if proto == NH_ICMPV6 else self.v6.ip_b
            self.v6.send(dst, proto, parts, hop_limit=ttl, src=src, vnet=vnet, traffic_class=tos)
            return
        length = 0
        for p in parts:
            length += len(p)
        route = self._routes.get(dst)
        if route is None:
            route = self._route(dst)
        next_hop, bcast = route
        if bcast:
            mac: bytes | None = BROADCAST_MAC
        elif next_hop == self.ip_b:
            mac = self.mac_b  # our own address: the loopback (send_frame)
        else:
            mac = self.arp.lookup(next_hop, self.now())
        if length + 20 > self.mtu and vnet is None:
            payload = b"".join(parts)
            ident = self.ip_ids.next()
            datagrams: list[list[Buffer]] = [
                [h, p]
                for h, p in ip_proto.fragment(
                    payload, self.mtu, src=self.ip_b, dst=dst, proto=proto, ident=ident, ttl=ttl,
                    tos=tos,
                )  # fmt: skip
            ]
            self.ip_counters.inc("fragmented")
        else:
            hdr = ip_proto.build_ipv4_header(
                self.ip_b, dst, proto, length, self.ip_ids.next(), ttl=ttl, tos=tos
            )
            datagrams = [[hdr, *parts]]
        self.ip_counters["tx_packets"] += len(datagrams)
        if mac is not None:
            for d in datagrams:
                self.send_frame(mac, ETH_P_IP, d, vnet)
            return
        now = self.now()
        if vnet is not None:
            datagrams = [_OffloadDatagram(datagrams[0], vnet)]
        for d in datagrams:
            # Hold the datagram until ARP answers; the ARP table bounds the hold queue.
            for dst_mac, req in self.arp.resolve(next_hop, d, now):
                self.send_frame(dst_mac, ETH_P_ARP, [req])
        self._arm_arp_timer()

    # ----------------------------------------------------------------- timers

    def arm_timer(self, name: str, when: float | None, cb: Callable[[], None]) -> None:
        """Keep one loop timer per name at the earliest deadline (None cancels it)."""
        handle = self._timers.get(name)
        if when is None:
            if handle is not None:
                handle.cancel()
                del self._timers[name]
            return
        if handle is not None:
            if not handle.cancelled() and handle.when() <= when:
                return  # fires early; the callback re-arms for the real deadline
            handle.cancel()
        assert self.loop is not None

        def fire() -> None:
            self._timers.pop(name, None)
            cb()

        self._timers[name] = self.loop.call_at(when, fire)

    def _arm_arp_timer(self) -> None:
        self.arm_timer("arp", self.arp.next_deadline(), self._on_arp_timer)

    def _on_arp_timer(self) -> None:
        requests, failed = self.arp.poll(self.now())
        for dst_mac, req in requests:
            self.send_frame(dst_mac, ETH_P_ARP, [req])
        for ip, _dropped in failed:
            self.ip_counters.inc("arp_failed_drops", len(_dropped))
            self.notify_unreachable(ip)
            self._fail_pings(ip)
        self._arm_arp_timer()

    def _on_reasm_timer(self) -> None:
        expired = self.reassembler.poll(self.now())
        if expired:
            self.ip_counters.inc("reassembly_timeouts", expired)
        self.arm_timer("reasm", self.reassembler.next_deadline(), self._on_reasm_timer)

    # ------------------------------------------------------------------- ping

    @property
    def ping_ident(self) -> int:
        """The ICMP echo identifier of this stack's pings."""
        return self._ping_ident

    @ping_ident.setter
    def ping_ident(self, ident: int) -> None:
        # A multi-queue worker picks one that the TAP steers back to its own queue.
        if not 0 <= ident <= 0xFFFF:
            raise ValueError(f"an ICMP echo identifier is 0..65535, not {ident}")
        self._ping_ident = ident
        self.ping_sockets.reserved_ident = ident

    def ip6_source_for(self, dst: bytes) -> bytes | None:
        """The IPv6 source address a packet to ``dst`` leaves from (RFC 6724 in short:
        link-local for link-local destinations); None without IPv6."""
        return self.v6.source_for(dst) if self.v6 is not None else None

    def receive(self, frames: list[bytes]) -> None:
        """Process ``frames`` as if the NIC had delivered them in one batch (a multi-queue
        worker feeds in the ARP replies that reached another worker's queue)."""
        self._rx_batch(frames)

    async def ping(self, host: str, *, timeout: float = 1.0, size: int = 56) -> float:
        """Send one ICMP echo request; return the round-trip time in seconds.

        Raises TimeoutError when no reply comes within ``timeout`` and
        OSError(EHOSTUNREACH) when ARP cannot resolve the next hop.
        """
        addr = await resolve_ip(host)
        if ":" in addr:
            if self.v6 is None:
                raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
            payload = _ping_payload(size)
            return await self.v6.ping(
                ip6_to_bytes(addr), self._ping_ident, timeout=timeout, payload=payload
            )
        dst = ip_proto.ip_to_bytes(addr)
        assert self.loop is not None
        self._ping_seq = (self._ping_seq + 1) & 0xFFFF
        key = (self._ping_ident, self._ping_seq)
        # perf_counter, not loop.time(): uvloop's clock has only millisecond resolution.
        pending = _PendingPing(self.loop.create_future(), dst, time.perf_counter())
        self._pings[key] = pending
        self.icmp_counters.inc("echo_requests_sent")
        try:
            echo = icmp.build_echo(icmp.ECHO_REQUEST, *key, _ping_payload(size))
            self.send_ip(dst, IPPROTO_ICMP, [echo])
            return await asyncio.wait_for(pending.future, timeout)
        finally:
            self._pings.pop(key, None)

    def _route(self, dst: bytes) -> tuple[bytes, bool]:
        """(next hop, broadcast?) for an IPv4 ``dst``, remembered for ``send_ip``; raises
        OSError(ENETUNREACH) (counted, never remembered) when no route leads there."""
        if self.iface.is_broadcast(dst):
            route = (dst, True)
        else:
            hop = self.iface.next_hop(dst)
            if hop is None:
                self.ip_counters.inc("no_route")
                raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
            route = (hop, False)
        if len(self._routes) < 4096:
            self._routes[bytes(dst)] = route
        return route

    def _fail_pings(self, next_hop: bytes) -> None:
        for pending in list(self._pings.values()):
            if pending.future.done():
                continue
            dst = pending.dst
            hop = dst if self.iface.is_broadcast(dst) else self.iface.next_hop(dst)
            if hop == next_hop:
                pending.future.set_exception(
                    OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH))
                )

    def next_hop(self, dst: bytes) -> bytes | None:
        """The neighbour a packet to ``dst`` (4 or 16 bytes) goes to, None if unreachable."""
        if len(dst) == 16:
            return self.v6.next_hop(dst) if self.v6 is not None else None
        return self.iface.next_hop(dst)

    @property
    def ip6_b(self) -> bytes | None:
        """The stack's IPv6 address (16 bytes), None without one."""
        return self.v6.ip_b if self.v6 is not None else None

    @property
    def ip6(self) -> str | None:
        """The stack's IPv6 address as text, None without one."""
        return self.v6.ip if self.v6 is not None else None

    def send_icmp6_error(
        self, hdr: IPv6Header, packet: Buffer, payload: Buffer, type_: int, code: int
    ) -> bool:
        """Answer a received IPv6 packet with an ICMPv6 error where RFC 4443 (2.4) allows."""
        if self.v6 is None:
            return False
        return self.v6.send_error(hdr, packet, payload, type_, code)

    def add_unreachable_listener(self, cb: Callable[[bytes], None]) -> None:
        """Register ``cb(next_hop)`` to be called when ARP or Neighbor Discovery gives up
        on a next hop."""
        self._unreachable_listeners.append(cb)

    def notify_unreachable(self, next_hop: bytes) -> None:
        """ARP or Neighbor Discovery gave up on ``next_hop``: tell the listeners."""
        for listener in list(self._unreachable_listeners):
            listener(next_hop)

    # -------------------------------------------------------------- sockets API

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], Any],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.DatagramTransport, Any]:
        """Like ``loop.create_datagram_endpoint`` on this stack: returns (transport, protocol)."""
        return await self.udp.create_endpoint(protocol_factory, local_addr, remote_addr, **kwargs)

    async def create_ping_endpoint(
        self,
        protocol_factory: Callable[[], Any],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        *,
        v6: bool = False,
    ) -> tuple[asyncio.DatagramTransport, Any]:
        """A ping socket (Linux's ``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)``; with
        ``v6``, ICMPv6's) on this stack: ``sendto`` an echo request, ``datagram_received``
        gets the echo replies that carry its identifier (``local_addr[1]``; 0: a free
        one). See ``transport/ping.py``."""
        return await self.ping_sockets.create_endpoint(
            protocol_factory, local_addr, remote_addr, v6=v6
        )

    async def create_connection(
        self, protocol_factory: Callable[[], Any], host: str, port: int, **kwargs: Any
    ) -> tuple[asyncio.Transport, Any]:
        """Like ``loop.create_connection`` on this stack: returns (transport, protocol)."""
        return await self.tcp.create_connection(protocol_factory, host, port, **kwargs)

    async def create_server(
        self,
        protocol_factory: Callable[[], Any],
        host: str | None = None,
        port: int = 0,
        **kwargs: Any,
    ) -> Server:
        """Like ``loop.create_server`` on this stack: returns a Server."""
        return await self.tcp.create_server(protocol_factory, host, port, **kwargs)

    async def open_connection(
        self, host: str, port: int, *, limit: int = 2**16, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Like ``asyncio.open_connection``: returns (StreamReader, StreamWriter)."""
        from .transport.streams import open_connection

        return await open_connection(self, host, port, limit=limit, **kwargs)

    async def start_server(
        self,
        client_connected_cb: Callable[..., Any],
        host: str | None = None,
        port: int = 0,
        *,
        limit: int = 2**16,
        **kwargs: Any,
    ) -> Server:
        """Like ``asyncio.start_server``: returns a Server."""
        from .transport.streams import start_server

        return await start_server(self, client_connected_cb, host, port, limit=limit, **kwargs)

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        """Every counter of every layer, JSON-serialisable (``anp ctl stats``)."""
        mode: dict[str, Any] = {"name": self.mode_name, "params": self.mode_params}
        if self._mode is not None:
            mode.update(self._mode.stats.as_dict())
        mode["totals_all_modes"] = {k: v + mode.get(k, 0) for k, v in self._mode_totals.items()}
        nic_stats = self.nic.stats.as_dict()
        faults = getattr(self.nic, "fault_stats", None)
        return {
            "address": self.ip,
            "mac": self.mac,
            "nic": nic_stats | ({"faults": dict(faults)} if faults else {}),
            "mode": mode,
            "eth": dict(self.eth_counters),
            "loopback": dict(self.loopback.counters) if self.loopback is not None else {},
            "arp": dict(self.arp.counters) | {"entries": len(self.arp.entries())},
            "ip": dict(self.ip_counters)
            | {f"reassembly_{k}": self.reassembler.counters[k] for k in _REASSEMBLY_DROPS},
            "icmp": dict(self.icmp_counters),
            "udp": self.udp.stats(),
            "ping_sockets": self.ping_sockets.stats(),
            "tcp": self.tcp.stats()
            | (dict(self.timer_gate.counters) if self.timer_gate is not None else {}),
            "offload": self.offload.stats(),
            **({"ipv6": self.v6.stats()} if self.v6 is not None else {}),
        }
