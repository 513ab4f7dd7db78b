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
from typing import TYPE_CHECKING

from ..nic.netns import Netns
from ..nic.tap import TapNic
from .spec import READY, WorkerSpec

if TYPE_CHECKING:
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
    """A multi-queue host: the TAP, the addresses, the mode and what every worker serves."""

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
    congestion: str = "newreno"
    #: "FILE.pcap": each worker records into FILE.wI.pcap.
    pcap: str | None = None
    #: The host's control socket; workers serve theirs beside it. None: no control sockets.
    control: str | None = None
    echo: int | None = None
    sink: int | None = None
    http: int | None = None
    #: "module:function": ``async function(stack, index)`` run in every worker.
    setup: str | None = None
    #: Start a fresh worker on a dead worker's queue (at most MAX_RESTARTS a minute).
    restart: bool = True
    #: Steer flows with the known function of nic/steering.py (False: the kernel's
    #: automq, whose secret-keyed hash the workers cannot predict -- for comparison only).
    steering: bool = True


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
        self.config = config
        self.mac = config.mac or _random_mac()
        self.nics: list[TapNic] = []
        self.workers: list[_Worker] = []
        self.deaths: list[Death] = []
        self._on_death = on_death
        self._closing = False
        self._relay: list[tuple[socket.socket, socket.socket]] = []
        self._control: FanoutControl | None = None

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
            )
            for _ in range(cfg.queues):
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._relay.append((a, b))
            netns = cfg.netns.name if isinstance(cfg.netns, Netns) else cfg.netns
            for i, nic in enumerate(self.nics):
                spec = WorkerSpec(
                    index=i,
                    queues=cfg.queues,
                    steered=cfg.steering,
                    tap=cfg.tap,
                    tap_fd=nic.fileno(),
                    ip=cfg.ip,
                    mac=self.mac,
                    kernel_mac=nic.kernel_mac.hex(),
                    netns=netns,
                    peer=cfg.peer,
                    gateway=cfg.gateway,
                    mtu=cfg.mtu,
                    vnet_hdr=cfg.vnet_hdr,
                    mode=cfg.mode,
                    mode_params=dict(cfg.mode_params),
                    congestion=cfg.congestion,
                    pcap=_worker_pcap(cfg.pcap, i, cfg.queues),
                    control=worker_control_path(cfg.control, i) if cfg.control else None,
                    echo=cfg.echo,
                    sink=cfg.sink,
                    http=cfg.http,
                    setup=cfg.setup,
                    relay_in=self._relay[i][0].fileno() if cfg.queues > 1 else -1,
                    relay_out=[self._relay[j][1].fileno() for j in range(cfg.queues) if j != i]
                    if cfg.queues > 1
                    else [],
                )
                self.workers.append(_Worker(spec))
            await asyncio.gather(*(self._spawn(w) for w in self.workers))
            if cfg.control:
                from .fanout import FanoutControl

                self._control = FanoutControl(self, cfg.control)
                await self._control.start()
        except BaseException:
            await self.close()
            raise

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
            except (OSError, RuntimeError) as e:
                log.error("worker %d could not be restarted: %s", w.spec.index, e)

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
        for nic in self.nics:
            nic.close()
        for a, b in self._relay:
            a.close()
            b.close()
        self._relay = []


def _worker_pcap(pcap: str | None, index: int, queues: int) -> str | None:
    if pcap is None or queues == 1:
        return pcap
    root, ext = os.path.splitext(pcap)
    return f"{root}.w{index}{ext or '.pcap'}"


def with_queues(config: HostConfig, queues: int) -> HostConfig:
    """``config`` with another queue count."""
    return replace(config, queues=queues)
