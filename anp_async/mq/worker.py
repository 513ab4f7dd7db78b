"""One worker of a multi-queue host: a whole stack on one queue of a multi-queue TAP.

The supervisor (:mod:`.host`) opens the TAP's queues and starts one worker process per
queue with ``python -m anp_async.mq.worker SPEC`` (SPEC is a JSON :class:`WorkerSpec`; the
queue's descriptor and the ARP relay sockets are inherited). A worker has its own event
loop, receive mode, connections and control socket; it shares only the addresses (IP and
MAC) with its siblings. What makes N such stacks look like one host:

- the NIC steers each flow to one queue (:mod:`anp_async.nic.steering`); connections this
  worker opens take ports (and pings identifiers) that the steering function maps to its
  own queue, so the replies come back here;
- every worker answers the ARP and ICMP requests that reach it, and runs the same
  listeners (like SO_REUSEPORT): a kernel client's connection is served by whichever
  worker its flow is steered to;
- an ARP reply reaches one queue, but any worker may be waiting for it: the worker that
  receives one relays a copy to its siblings over a Unix datagram socket (the only thing
  the workers exchange).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from ..nic.steering import steer_icmp, steer_queue
from ..nic.tap import TapNic
from ..nic.vnet import VNET_HDR_LEN
from ..transport.udp import EPHEMERAL_PORTS
from .spec import READY, WorkerSpec

if TYPE_CHECKING:
    from ..nic.base import Nic
    from ..stack import Stack, StackConfig

log = logging.getLogger("anp_async.mq")


def _is_arp_reply(frame: bytes, off: int) -> bool:
    # Ethernet type 0x0806 (ARP), operation 2 (reply): RFC 826.
    return frame[off + 12 : off + 14] == b"\x08\x06" and frame[off + 20 : off + 22] == b"\x00\x02"


class QueueNic(TapNic):
    """One queue of a multi-queue TAP; copies every ARP reply it receives to the siblings."""

    relay_out: list[int]

    def recv_batch(self, max_frames: int = 64) -> list[bytes]:
        frames = super().recv_batch(max_frames)
        if self.relay_out:
            off = VNET_HDR_LEN if self.vnet_hdr else 0
            for f in frames:
                if _is_arp_reply(f, off):
                    for fd in self.relay_out:
                        with contextlib.suppress(OSError):
                            os.write(fd, f)
        return frames


class EchoProtocol(asyncio.Protocol):
    """TCP echo (RFC 862) as a Protocol: every byte straight back (no stream layers)."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool | None:
        return False  # close our side too


class SinkProtocol(asyncio.Protocol):
    """TCP discard (RFC 863): read and drop; close when the peer has sent everything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        return False


def own_ports(index: int, queues: int) -> Any:
    """The ``TcpHost.port_ok`` of worker ``index``: ports whose replies reach its queue."""

    def ok(lport: int, rport: int) -> bool:
        return steer_queue(lport, rport, queues) == index

    return ok


def own_udp_ports(index: int, queues: int) -> Any:
    """The ``UdpLayer.port_ok`` of worker ``index``: for a connected endpoint a port whose
    replies reach its queue (as for TCP); for an unconnected one -- whose peers' ports are
    unknown, so no port can be steered for all of them -- a port this worker owns (port
    modulo the queue count), to which the other workers hand its datagrams on."""

    def ok(lport: int, rport: int | None) -> bool:
        if rport is None:
            return lport % queues == index
        return steer_queue(lport, rport, queues) == index

    return ok


def udp_hand_on(spec: WorkerSpec, kernel_mac: bytes) -> Any:
    """The ``UdpLayer.misdirected`` of a worker: an IPv4 datagram for an ephemeral port
    bound nowhere here goes to the worker that owns the port (:func:`own_udp_ports`) as
    a frame over the relay socket. Its checksum was checked here (or by the kernel)."""
    from ..nic.vnet import F_DATA_VALID
    from ..proto.ethernet import mac_to_bytes

    eth = mac_to_bytes(spec.mac) + kernel_mac + b"\x08\x00"
    vnet = bytes([F_DATA_VALID]) + bytes(VNET_HDR_LEN - 1) if spec.vnet_hdr else b""
    prefix = vnet + eth
    fds = spec.relay_out

    def hand_on(dport: int, ip_packet: memoryview) -> bool:
        if dport not in EPHEMERAL_PORTS or len(ip_packet) < 20 or ip_packet[0] >> 4 != 4:
            return False
        owner = dport % spec.queues
        if owner == spec.index:
            return False
        fd = fds[owner if owner < spec.index else owner - 1]
        total = int.from_bytes(ip_packet[2:4], "big")
        with contextlib.suppress(OSError):  # a full or gone sibling: the datagram is lost
            os.write(fd, prefix + bytes(ip_packet[:total]))
        return True

    return hand_on


def read_relay(stack: Stack, relay: socket.socket) -> None:
    """Feed the frames siblings relay to ``stack`` (ARP replies, UDP handed on) as if its
    own queue had received them; the reader goes with the stack's loop."""
    relay.setblocking(False)

    def on_relay() -> None:
        frames = []
        with contextlib.suppress(BlockingIOError):
            for _ in range(64):
                frames.append(relay.recv(65536))
        if frames:
            stack.receive(frames)

    asyncio.get_running_loop().add_reader(relay.fileno(), on_relay)


def stack_config(spec: WorkerSpec, nic: Nic) -> StackConfig:
    """The worker's StackConfig: every stack field the supervisor was given."""
    from ..proto.tcp.config import TcpConfig
    from ..stack import StackConfig

    tcp = TcpConfig(**spec.tcp) if spec.tcp else TcpConfig(congestion=spec.congestion)
    return StackConfig(
        nic=nic, ip=spec.ip, mac=spec.mac, gateway=spec.gateway, ip6=spec.ip6,
        gateway6=spec.gateway6, dad_transmits=spec.dad_transmits, mtu=spec.mtu,
        mode=spec.mode, mode_params=dict(spec.mode_params), tcp=tcp, pcap=spec.pcap,
        icmp_port_unreachable=spec.icmp_port_unreachable,
    )  # fmt: skip


def _trace(stack: Stack, spec: WorkerSpec) -> None:
    """``--trace [EXPR]``: this worker's records on stderr, each line tagged ``[wI]``."""
    from ..obs.trace import Tracer, format_record

    tag = f"[w{spec.index}] "

    def sink(r: dict[str, Any]) -> None:
        # one write per record: the workers share stderr, and a pipe keeps writes of up
        # to PIPE_BUF bytes whole, so records of two workers never mix within a line
        text = "".join(tag + line + "\n" for line in format_record(r).splitlines())
        sys.stderr.write(text)
        sys.stderr.flush()

    Tracer(stack, sink, filter=spec.trace or None).attach()


async def _host_stats(path: str) -> dict[str, Any]:
    """The host's stats (summed, and each worker's under ``workers``) from its control socket."""
    from ..control import encode

    reader, writer = await asyncio.open_unix_connection(path, limit=64 * 1024 * 1024)
    try:
        writer.write(encode({"cmd": "stats"}))
        line = await asyncio.wait_for(reader.readline(), 10.0)
    finally:
        writer.close()
    ans = json.loads(line) if line else {}
    if not ans.get("ok"):
        raise OSError(f"host control socket {path}: {ans.get('error', 'no answer')}")
    return dict(ans["stats"])


async def _serve(spec: WorkerSpec) -> None:
    from ..control import ControlServer
    from ..stack import Stack

    nic = QueueNic(
        spec.tap_fd,
        spec.tap,
        peer=spec.peer,
        netns_name=spec.netns,
        mtu=spec.mtu,
        kernel_mac=bytes.fromhex(spec.kernel_mac),
        vnet_hdr=spec.vnet_hdr,
    )
    nic.relay_out = list(spec.relay_out)
    for fd in nic.relay_out:  # a sibling that stopped reading must never block this one
        os.set_blocking(fd, False)
    stack = Stack(stack_config(spec, nic))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with stack:
        if spec.queues > 1 and spec.steered:
            stack.tcp.host.port_ok = own_ports(spec.index, spec.queues)
            # ICMP echo identifiers are steered like ports (nic/steering.py).
            ident = stack.ping_ident
            while steer_icmp(ident, spec.queues) != spec.index:
                ident = (ident + 1) & 0xFFFF
            stack.ping_ident = ident
            # Ping sockets too: an identifier whose replies the TAP steers to this worker.
            stack.ping_sockets.ident_ok = lambda i: steer_icmp(i, spec.queues) == spec.index
            stack.udp.port_ok = own_udp_ports(spec.index, spec.queues)
            stack.udp.misdirected = udp_hand_on(spec, nic.kernel_mac)
        if spec.trace is not None:
            _trace(stack, spec)
        if spec.relay_in >= 0:
            read_relay(stack, socket.socket(fileno=spec.relay_in))
        closers: list[Any] = []
        host = stack.ip
        if spec.echo is not None:
            from ..apps.echo import UdpEchoProtocol

            udp, _ = await stack.create_datagram_endpoint(
                UdpEchoProtocol, local_addr=(host, spec.echo)
            )
            closers.append(udp)
            closers.append(await stack.create_server(EchoProtocol, host, spec.echo))
        if spec.sink is not None:
            closers.append(await stack.create_server(SinkProtocol, host, spec.sink))
        if spec.http is not None:
            from ..apps.http import http_handler

            closers.append(await stack.start_server(http_handler, host, spec.http))
        if spec.metrics is not None and spec.host_control:
            from ..apps.metrics import metrics_handler
            from .metrics import render_host

            host_control = spec.host_control

            async def host_metrics(openmetrics: bool) -> str:
                return render_host(await _host_stats(host_control), openmetrics)

            closers.append(
                await stack.start_server(
                    metrics_handler(render_text=host_metrics), host, spec.metrics
                )
            )
        if spec.setup:
            import importlib

            mod, _, fn = spec.setup.partition(":")
            await getattr(importlib.import_module(mod), fn)(stack, spec.index)
        api = None
        if spec.api:
            from ..preload.siblings import serve_worker_api

            api = await serve_worker_api(stack, spec.api, spec.index, spec.queues, stop)
        info = {"tap": spec.tap, "netns": spec.netns, "peer": spec.peer, "prefix": spec.ip,
                "worker": spec.index, "queues": spec.queues}  # fmt: skip
        ctl = ControlServer(stack, spec.control, info) if spec.control else None
        if ctl is not None:
            await ctl.start()
        try:
            print(READY, flush=True)
            await stop.wait()
        finally:
            if api is not None:
                api.close()
            if ctl is not None:
                await ctl.close()
            for c in closers:
                c.close()


def _die_with_parent() -> None:
    """SIGTERM this worker when the supervisor dies (prctl PR_SET_PDEATHSIG), so no worker
    outlives its host, even when the supervisor is killed."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the supervisor died before prctl
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process: ``python -m anp_async.mq.worker SPEC_JSON``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m anp_async.mq.worker SPEC_JSON", file=sys.stderr)
        return 2
    spec = WorkerSpec.from_json(args[0])
    _die_with_parent()
    if spec.cpu is not None:
        os.sched_setaffinity(0, {spec.cpu})
    logging.basicConfig(level=spec.log_level, format=f"worker {spec.index}: %(message)s")
    if spec.loop == "uvloop":
        import uvloop

        uvloop.run(_serve(spec))
    else:
        asyncio.run(_serve(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
