"""A multi-queue host: one TAP with N queues, one stack worker process per queue (RSS).

A :class:`Stack` is one process and so one core. :class:`MultiQueueHost` scales a host
across cores the way a NIC with receive-side scaling does: it opens an ``IFF_MULTI_QUEUE``
TAP whose kernel side steers each flow to one queue (:mod:`anp_async.nic.steering`), and
starts one worker process per queue (:mod:`.worker`), each a whole stack with its own
event loop, receive mode and connections. The workers share the addresses and nothing
else. The supervisor (this object, in the calling process) watches them: a worker that
dies is reported (:attr:`deaths`, the log, the control socket), its connections are gone
with it, the others keep serving, and (``restart=True``) a fresh worker takes over the
queue -- its stack answers the dead worker's flows with a reset, so their peers learn at
once, and serves new connections again.

The control socket (:mod:`.fanout`) answers for all workers: ``stats`` summed plus each
worker's, ``set_mode`` applied to every worker, ``trace`` merged, and any request with
``"worker": i`` passed to worker ``i`` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..nic.netns import Netns
from ..nic.tap import TapNic
from ..proto.tcp.config import TcpConfig
from .spec import READY, WorkerSpec, tcp_to_dict

if TYPE_CHECKING:
    from ..stack import Stack, StackConfig
    from .fanout import FanoutControl

log = logging.getLogger("anp_async.mq")

#: Most restarts of one queue's worker within :data:`RESTART_WINDOW` seconds.
MAX_RESTARTS = 3
RESTART_WINDOW = 60.0
#: How long a worker may take to start serving.
START_TIMEOUT = 30.0


def _random_mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02  # locally administered unicast
    return ":".join(f"{x:02x}" for x in b)


def worker_control_path(control: str, index: int) -> str:
    """Worker ``index``'s own control socket beside the host's (``X.sock`` -> ``X.w0.sock``)."""
    base = control[:-5] if control.endswith(".sock") else control
    return f"{base}.w{index}.sock"


@dataclass
class HostConfig:
    """A multi-queue host: the TAP, the addresses, the mode and what every worker serves.

    :meth:`from_stack_config` builds one from a :class:`~anp_async.stack.StackConfig`
    (``StackConfig(queues=N)``): every field of it reaches every worker's stack.
    """

    tap: str = "anptap0"
    queues: int = 2
    ip: str = "10.0.0.2/24"
    peer: str | None = "10.0.0.1/24"
    netns: Netns | str | None = None
    mac: str | None = None
    gateway: str | None = None
    mtu: int = 1500
    vnet_hdr: bool = True
    mode: str = "interrupt"
    mode_params: dict[str, int] = field(default_factory=dict)
    #: The congestion control, used when ``tcp`` is None.
    congestion: str = "newreno"
    #: Every TCP option of the workers' stacks (recovery, ECN, buffers ...); None: the
    #: defaults with ``congestion``.
    tcp: TcpConfig | None = None
    #: IPv6 address of the stack and of the TAP's kernel end. The steering program sends
    #: every IPv6 frame to queue 0, so IPv6 needs ``queues == 1`` for now.
    ip6: str | None = None
    peer6: str | None = None
    gateway6: str | None = None
    dad_transmits: int = 1
    icmp_port_unreachable: bool = True
    #: Trace every worker's stack to stderr (``anp up --trace [EXPR]``), lines tagged [wI].
    trace: str | None = None
    #: Serve OpenMetrics on this TCP port of every worker: the host's summed counters
    #: and each worker's (label ``worker``); needs ``control``.
    metrics: int | None = None
    #: The workers' event loop: "asyncio" or "uvloop".
    loop: str = "asyncio"
    #: "FILE.pcap": each worker records into FILE.wI.pcap.
    pcap: str | None = None
    #: The host's control socket; workers serve theirs beside it. None: no control sockets.
    control: str | None = None
    echo: int | None = None
    sink: int | None = None
    http: int | None = None
    #: "module:function": ``async function(stack, index)`` run in every worker.
    setup: str | None = None
    #: Serve the socket API of preloaded programs here (``anp run``/``anp run --attach``):
    #: worker 0 serves it, and a program's listeners and UDP ports reach every worker
    #: (:mod:`anp_async.preload.siblings`). None: no API.
    api: str | None = None
    #: Start a fresh worker on a dead worker's queue (at most MAX_RESTARTS a minute).
    restart: bool = True
    #: Steer flows with the known function of nic/steering.py (False: the kernel's
    #: automq, whose secret-keyed hash the workers cannot predict -- for comparison only).
    steering: bool = True
    #: Pin worker i to the i-th CPU this process may use (modulo their number), as a
    #: NIC's queue i interrupts CPU i: the scheduler cannot stack two workers on one core.
    pin_cpus: bool = False

    @classmethod
    def from_stack_config(
        cls, config: StackConfig, *, tap: str = "anptap0", peer: str | None = "10.0.0.1/24",
        **host: Any,
    ) -> HostConfig:  # fmt: skip
        """The host that runs ``config`` on ``config.queues`` workers, one per queue of
        the multi-queue TAP ``tap`` (kernel end ``peer``). ``config.nic`` must be None (the
        host opens the TAP); ``host`` sets the other fields (netns, control, echo, ...)."""
        config.validate()
        if config.nic is not None:
            raise ValueError(
                "StackConfig.nic must be None for a multi-queue host: it opens the "
                "multi-queue TAP itself (name it with tap=...)"
            )
        return cls(
            tap=tap, queues=config.queues, ip=config.ip, peer=peer, mac=config.mac,
            gateway=config.gateway, mtu=config.mtu or 1500, mode=config.mode,
            mode_params=dict(config.mode_params), congestion=config.tcp.congestion,
            tcp=config.tcp, ip6=config.ip6, gateway6=config.gateway6,
            dad_transmits=config.dad_transmits, pcap=config.pcap,
            icmp_port_unreachable=config.icmp_port_unreachable, **host,
        )  # fmt: skip

    def tcp_config(self) -> TcpConfig:
        """The TcpConfig every worker's stack gets."""
        return self.tcp if self.tcp is not None else TcpConfig(congestion=self.congestion)


@dataclass
class Death:
    """A worker that ended without being asked to."""

    index: int
    pid: int
    returncode: int
    at: float

    def describe(self) -> str:
        how = (
            f"killed by signal {-self.returncode}"
            if self.returncode < 0
            else f"exit status {self.returncode}"
        )
        return f"worker {self.index} (pid {self.pid}) died: {how}"


class _Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts: list[float] = []
        self.watch: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class MultiQueueHost:
    """N stack workers on one multi-queue TAP. ``async with MultiQueueHost(cfg) as host``.

    ``on_death(death)`` is called (in the supervisor's loop) for every worker that dies.
    """

    def __init__(self, config: HostConfig, on_death: Callable[[Death], None] | None = None) -> None:
        if not isinstance(config.queues, int) or isinstance(config.queues, bool):
            raise ValueError(f"queues must be an integer, got {config.queues!r}")
        if not 1 <= config.queues <= 256:
            raise ValueError(f"queues must be 1..256, got {config.queues}")
        if config.ip6 is not None and config.queues > 1:
            raise ValueError(
                "IPv6 with queues > 1 is not supported yet: the steering program sends every "
                "IPv6 frame to queue 0 (nic/steering.py), so only one worker would hear it"
            )
        if config.metrics is not None and config.control is None:
            raise ValueError("metrics needs control (the workers ask it for the summed counters)")
        if config.loop not in ("asyncio", "uvloop"):
            raise ValueError(f"loop must be asyncio or uvloop, got {config.loop!r}")
        if config.tcp is not None and not isinstance(config.tcp, TcpConfig):
            raise ValueError(f"tcp must be a TcpConfig, got {config.tcp!r}")
        self.config = config
        self.mac = config.mac or _random_mac()
        self.nics: list[TapNic] = []
        self.workers: list[_Worker] = []
        self.deaths: list[Death] = []
        self._on_death = on_death
        self._closing = False
        self._relay: list[tuple[socket.socket, socket.socket]] = []
        self._control: FanoutControl | None = None
        #: Queue -> the supervisor's socket-less stack on a queue whose worker is gone
        #: for good (``restart=False``, or too many restarts).
        self._tombstones: dict[int, Stack] = {}

    @classmethod
    def from_stack_config(
        cls, config: StackConfig, *, tap: str = "anptap0", peer: str | None = "10.0.0.1/24",
        on_death: Callable[[Death], None] | None = None, **host: Any,
    ) -> MultiQueueHost:  # fmt: skip
        """``StackConfig(queues=N)`` as N workers (:meth:`HostConfig.from_stack_config`):
        ``async with MultiQueueHost.from_stack_config(cfg, tap="anptap0") as host``."""
        return cls(HostConfig.from_stack_config(config, tap=tap, peer=peer, **host), on_death)

    @property
    def ip(self) -> str:
        return self.config.ip.partition("/")[0]

    @property
    def kernel_mac(self) -> bytes:
        return self.nics[0].kernel_mac if self.nics else b""

    def pids(self) -> list[int | None]:
        """Each queue's worker process id (None while none runs)."""
        return [w.pid if w.alive else None for w in self.workers]

    async def __aenter__(self) -> MultiQueueHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the TAP's queues and start every worker; returns once all of them serve."""
        cfg = self.config
        try:
            self.nics = await asyncio.to_thread(
                TapNic.open_queues,
                cfg.tap,
                cfg.queues,
                peer=cfg.peer,
                netns=cfg.netns,
                mtu=cfg.mtu,
                vnet_hdr=cfg.vnet_hdr,
                steering=cfg.steering,
                peer6=cfg.peer6,
            )
            for _ in range(cfg.queues):
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._relay.append((a, b))
            for i, nic in enumerate(self.nics):
                spec = self.worker_spec(i, nic.fileno(), nic.kernel_mac)
                self.workers.append(_Worker(spec))
            await asyncio.gather(*(self._spawn(w) for w in self.workers))
            if cfg.control:
                from .fanout import FanoutControl

                self._control = FanoutControl(self, cfg.control)
                await self._control.start()
        except BaseException:
            await self.close()
            raise

    def worker_spec(self, i: int, tap_fd: int, kernel_mac: bytes) -> WorkerSpec:
        """What worker ``i`` is told: every field of the config that its stack needs."""
        cfg = self.config
        netns = cfg.netns.name if isinstance(cfg.netns, Netns) else cfg.netns
        relay = cfg.queues > 1 and len(self._relay) == cfg.queues
        return WorkerSpec(
            index=i,
            queues=cfg.queues,
            steered=cfg.steering,
            cpu=_cpu_of(i) if cfg.pin_cpus else None,
            log_level=log.getEffectiveLevel(),
            tap=cfg.tap,
            tap_fd=tap_fd,
            ip=cfg.ip,
            mac=self.mac,
            kernel_mac=kernel_mac.hex(),
            netns=netns,
            peer=cfg.peer,
            gateway=cfg.gateway,
            mtu=cfg.mtu,
            vnet_hdr=cfg.vnet_hdr,
            mode=cfg.mode,
            mode_params=dict(cfg.mode_params),
            congestion=cfg.congestion,
            tcp=tcp_to_dict(cfg.tcp_config()),
            ip6=cfg.ip6,
            gateway6=cfg.gateway6,
            dad_transmits=cfg.dad_transmits,
            icmp_port_unreachable=cfg.icmp_port_unreachable,
            trace=cfg.trace,
            metrics=cfg.metrics,
            host_control=cfg.control,
            loop=cfg.loop,
            pcap=_worker_pcap(cfg.pcap, i, cfg.queues),
            control=worker_control_path(cfg.control, i) if cfg.control else None,
            echo=cfg.echo,
            sink=cfg.sink,
            http=cfg.http,
            setup=cfg.setup,
            api=cfg.api,
            relay_in=self._relay[i][0].fileno() if relay else -1,
            relay_out=[self._relay[j][1].fileno() for j in range(cfg.queues) if j != i]
            if relay
            else [],
        )

    async def _spawn(self, w: _Worker) -> None:
        spec = w.spec
        fds = [spec.tap_fd, *spec.relay_out] + ([spec.relay_in] if spec.relay_in >= 0 else [])
        w.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "anp_async.mq.worker",
            spec.to_json(),
            pass_fds=fds,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a terminal's SIGINT goes to the supervisor only
        )
        assert w.proc.stdout is not None
        try:
            line = await asyncio.wait_for(w.proc.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            line = b""
        if line.decode().strip() != READY:
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
            rc = await w.proc.wait()
            raise RuntimeError(f"worker {spec.index} failed to start (exit status {rc})")
        w.watch = asyncio.ensure_future(self._watch(w, w.proc))

    async def _watch(self, w: _Worker, proc: asyncio.subprocess.Process) -> None:
        rc = await proc.wait()
        if self._closing:
            return
        death = Death(w.spec.index, proc.pid, rc, time.time())
        self.deaths.append(death)
        log.warning("%s; its connections are gone, the other workers keep serving",
                    death.describe())  # fmt: skip
        if self._on_death is not None:
            self._on_death(death)
        now = time.monotonic()
        w.restarts = [t for t in w.restarts if now - t < RESTART_WINDOW]
        if self.config.restart and len(w.restarts) < MAX_RESTARTS:
            w.restarts.append(now)
            try:
                await self._spawn(w)
                log.warning("worker %d restarted (pid %s)", w.spec.index, w.pid)
                return
            except (OSError, RuntimeError) as e:
                if self._closing:  # the host is going down: the restart was stopped
                    return
                log.error("worker %d could not be restarted: %s", w.spec.index, e)
        self._tombstone(w)

    def _tombstone(self, w: _Worker) -> None:
        """No worker will serve this queue again: the supervisor answers its frames with a
        stack that has no sockets, so the dead worker's peers get a reset at their next
        segment (RFC 9293 3.10.7.1: a segment for no connection gets RST) instead of
        retransmitting into a queue nobody reads; ARP and ping are still answered (and ARP
        replies relayed). New flows the steering hash puts on this queue are refused the
        same way: the hash is fixed, like an RSS indirection table nobody rewrote."""
        from ..stack import Stack
        from .worker import QueueNic, read_relay, stack_config

        spec = w.spec
        if spec.index in self._tombstones or self._closing:
            return
        nic = QueueNic(
            os.dup(spec.tap_fd), spec.tap, peer=spec.peer, netns_name=spec.netns, mtu=spec.mtu,
            kernel_mac=bytes.fromhex(spec.kernel_mac), vnet_hdr=spec.vnet_hdr,
        )  # fmt: skip
        nic.relay_out = [
            self._relay[j][1].fileno() for j in range(len(self._relay)) if j != spec.index
        ]
        try:
            stack = Stack(stack_config(replace(spec, pcap=None), nic))
            stack.start()
        except (OSError, ValueError) as e:
            nic.close()
            log.error("queue %d: no stack to reset the dead worker's flows: %s", spec.index, e)
            return
        if spec.index < len(self._relay) and self.config.queues > 1:
            read_relay(stack, self._relay[spec.index][0])  # the ARP replies it needs to reset
        self._tombstones[spec.index] = stack
        log.warning("queue %d has no worker: its flows are answered with resets", spec.index)

    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to worker ``index`` (tests and demos of a worker dying)."""
        w = self.workers[index]
        if w.proc is not None and w.alive:
            w.proc.send_signal(sig)

    async def wait_restarted(self, index: int, timeout: float = START_TIMEOUT) -> None:
        """Wait until worker ``index`` has died and its replacement serves."""
        w = self.workers[index]
        deadline = time.monotonic() + timeout
        first = w.proc
        while time.monotonic() < deadline:
            if w.proc is not first and w.alive:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"worker {index} was not restarted within {timeout} s")

    async def close(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after 5 s) and close the TAP."""
        self._closing = True
        if self._control is not None:
            await self._control.close()
            self._control = None
        procs = [w.proc for w in self.workers if w.proc is not None and w.alive]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
        for w in self.workers:
            if w.watch is not None:
                w.watch.cancel()
            for path in _worker_sockets(w.spec):  # those of a worker that was killed
                with contextlib.suppress(OSError):
                    os.unlink(path)
        for stack in self._tombstones.values():
            await stack.close(linger=0)
        self._tombstones.clear()
        for nic in self.nics:
            nic.close()
        for a, b in self._relay:
            a.close()
            b.close()
        self._relay = []


def _cpu_of(index: int) -> int:
    """The CPU worker ``index`` is pinned to: the index-th allowed one, round robin."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[index % len(cpus)]


def _worker_sockets(spec: WorkerSpec) -> list[str]:
    """The Unix socket paths worker ``spec`` serves (control, socket API)."""
    paths = [spec.control] if spec.control else []
    if spec.api:
        from ..preload.siblings import sibling_api_path

        paths.append(spec.api if spec.index == 0 else sibling_api_path(spec.api, spec.index))
    return paths


def _worker_pcap(pcap: str | None, index: int, queues: int) -> str | None:
    if pcap is None or queues == 1:
        return pcap
    root, ext = os.path.splitext(pcap)
    return f"{root}.w{index}{ext or '.pcap'}"


def with_queues(config: HostConfig, queues: int) -> HostConfig:
    """``config`` with another queue count."""
    return replace(config, queues=queues)
