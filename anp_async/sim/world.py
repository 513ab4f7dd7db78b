"""The simulated world: hosts on one in-memory wire, each behind its own fault injector.

Per host the NIC chain is ``Stack -> CountingFaultyNic -> Port -> WireNic``:

- :class:`CountingFaultyNic` is the seeded fault injector that also counts what the stack
  offered it, so the simulator can check that offered + duplicated = dropped + held + sent.
- :class:`Port` is one incarnation's plug into the wire: it records every frame that
  enters the wire in the trace, and it can die (a crash: everything in and out is lost)
  while the wire end itself lives on for the next incarnation of the host (a restart).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..nic.base import Buffer, Nic, NicStats
from ..nic.faults import FaultConfig, FaultyNic
from ..nic.wire import Wire, WireNic
from ..proto.ipv4 import IdGenerator
from ..proto.tcp.config import ChallengeAckLimiter, TcpConfig
from ..proto.tcp.isn import IsnGenerator
from ..proto.tcp.syncookies import SynCookies
from ..stack import Stack, StackConfig
from .trace import Trace

__all__ = ["CountingFaultyNic", "Host", "Port", "World"]


class Port(Nic):
    """One incarnation of a host plugged into a wire end (see the module docstring)."""

    def __init__(self, wire: WireNic, name: str, trace: Trace) -> None:
        super().__init__()
        self.wire = wire
        self.name = name
        self.trace = trace
        self.mtu = wire.mtu
        self.dead = False
        self.closed = False
        self.calls = 0  # frames the fault injector passed on to this port
        self.sent = 0  # frames this port put on the wire
        self.received = 0  # frames handed to the stack
        self.discarded = 0  # frames read and thrown away while dead

    @property
    def stats(self) -> NicStats:
        return self.wire.stats

    @stats.setter
    def stats(self, value: NicStats) -> None:  # Nic.__init__ assigns one; the wire's wins
        pass

    def fileno(self) -> int:
        return self.wire.fileno()

    def send(self, parts: Sequence[Buffer]) -> None:
        self.calls += 1
        if self.dead or self.closed:
            return
        frame = b"".join(parts)
        self.trace.frame(self.name, frame)
        before = self.wire.stats.tx_frames
        self.wire.send((frame,))
        self.sent += self.wire.stats.tx_frames - before

    def recv_batch(self, max_frames: int = 64) -> list[bytes]:
        frames = self.wire.recv_batch(max_frames)
        if self.dead or self.closed:
            self.discarded += len(frames)
            return []
        self.received += len(frames)
        return frames

    def drain(self) -> int:
        """Throw away every frame waiting at the wire end (a host that is powered off)."""
        n = 0
        while batch := self.wire.recv_batch(512):
            n += len(batch)
        self.discarded += n
        return n

    def close(self) -> None:
        self.closed = True  # the wire end outlives this incarnation


class CountingFaultyNic(FaultyNic):
    """The fault injector, counting every frame the stack offers it."""

    def __init__(self, inner: Nic, config: FaultConfig, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(inner, config, loop)
        self.offered = 0

    def send(self, parts: Sequence[Buffer]) -> None:
        if not self._closed:
            self.offered += 1
        super().send(parts)

    def held(self) -> int:
        """Frames inside the injector now: waiting on a delay timer or in the rate queue."""
        return len(self._held) + len(self._rate_queue)


@dataclass
class Host:
    """A simulated host: its address, its wire end and its current stack (if up)."""

    name: str
    ip: str
    mac: str
    wire: WireNic
    faults: FaultConfig
    mode: str
    tcp: TcpConfig
    stack: Stack | None = None
    port: Port | None = None
    nic: CountingFaultyNic | None = None
    incarnation: int = 0
    #: Counters of the incarnations that are gone (frames offered, faults, ...).
    retired: dict[str, int] = field(default_factory=dict)
    #: Every incarnation's port, for the wire's accounting at the end.
    ports: list[Port] = field(default_factory=list)
    #: Frames put on this host's wire end by an attacker beside it (``World.inject``).
    injected: int = 0


def _seed_stack(stack: Stack, rng: random.Random) -> None:
    """Replace the stack's secrets and random starts with values drawn from ``rng``.

    The stack takes its ISN and SYN-cookie secrets from os.urandom and its challenge-ACK
    budget from an unseeded Random: right for production, but a replayable run needs them
    seeded. (Ephemeral ports and IP IDs come from the ``random`` module, which the
    simulator seeds per run.)
    """
    tcp = stack.tcp
    tcp.isn = IsnGenerator(rng.randbytes(16))
    tcp.cookies = SynCookies(rng.randbytes(32))
    tcp.challenge_limiter = ChallengeAckLimiter(
        tcp.config.challenge_ack_global_limit, seed=rng.getrandbits(32)
    )
    stack.ip_ids = IdGenerator(rng.getrandbits(16))
    stack._ping_ident = rng.getrandbits(16)


class World:
    """Hosts on one wire (two ends), a trace, and the checks' bookkeeping."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rng: random.Random, trace: Trace) -> None:
        self.loop = loop
        self.rng = rng
        self.trace = trace
        self.hosts: list[Host] = []
        self.failures: list[str] = []
        #: Bytes the applications received and checked (intact, in order, once).
        self.app_bytes = 0
        self._wires: list[WireNic] = []

    # ------------------------------------------------------------------ building

    def add_pair(
        self,
        faults: tuple[FaultConfig, FaultConfig],
        modes: tuple[str, str],
        tcp: tuple[TcpConfig, TcpConfig],
    ) -> tuple[Host, Host]:
        """Two hosts, 10.0.0.1 (a) and 10.0.0.2 (b), on the two ends of one wire."""
        ends = Wire.pair(names=("a", "b"))
        self._wires.extend(ends)
        hosts = []
        for i, (end, name) in enumerate(zip(ends, ("a", "b"), strict=True)):
            h = Host(
                name=name,
                ip=f"10.0.0.{i + 1}",
                mac=f"02:00:00:00:00:0{i + 1}",
                wire=end,
                faults=faults[i],
                mode=modes[i],
                tcp=tcp[i],
            )
            hosts.append(h)
            self.hosts.append(h)
        return hosts[0], hosts[1]

    def start(self, host: Host) -> Stack:
        """Bring up a new incarnation of ``host``'s stack on its wire end."""
        host.incarnation += 1
        port = Port(host.wire, f"{host.name}{host.incarnation}>", self.trace)
        nic = CountingFaultyNic(port, host.faults, self.loop)
        params: dict[str, int] = {}
        if host.mode == "adaptive":
            params = {"busy_poll_usecs": 0}
        cfg = StackConfig(
            nic=nic,
            ip=f"{host.ip}/24",
            mac=host.mac,
            mode=host.mode,
            mode_params=params,
            tcp=host.tcp,
        )
        stack = Stack(cfg)
        _seed_stack(stack, self.rng)
        stack.start()
        self.loop.watch_fd(host.wire.fileno())  # type: ignore[attr-defined]
        host.stack, host.port, host.nic = stack, port, nic
        host.ports.append(port)
        self.trace.log("host", f"{host.name} up #{host.incarnation} mac={host.mac} {host.mode}")
        return stack

    async def crash(self, host: Host) -> None:
        """Power the host off: nothing more leaves it, nothing reaches it, state is gone."""
        port, stack = host.port, host.stack
        if port is None or stack is None:
            return
        port.dead = True
        self.loop.unwatch_fd(host.wire.fileno())  # type: ignore[attr-defined]
        self.trace.log("host", f"{host.name} crash #{host.incarnation}")
        self._retire(host)
        await stack.close(linger=0.0)
        host.stack = None

    async def stop(self, host: Host, linger: float = 2.0) -> None:
        """An orderly shutdown of the host's stack (connections linger, then abort)."""
        stack = host.stack
        if stack is None:
            return
        await stack.close(linger=linger)
        self.loop.unwatch_fd(host.wire.fileno())  # type: ignore[attr-defined]
        self._retire(host)
        host.stack = None
        self.trace.log("host", f"{host.name} down #{host.incarnation}")

    def _retire(self, host: Host) -> None:
        r, nic, port = host.retired, host.nic, host.port
        if nic is None or port is None or r.get("_retired_nic") == id(nic):
            return
        r["_retired_nic"] = id(nic)
        r["offered"] = r.get("offered", 0) + nic.offered
        for k, v in nic.fault_stats.items():
            r[k] = r.get(k, 0) + v
        r["sent"] = r.get("sent", 0) + port.sent

    def inject(self, host: Host, frame: bytes) -> None:
        """Put a raw frame on the wire as if ``host`` sent it (an attacker beside it)."""
        self.trace.frame(f"{host.name}!", frame)
        before = host.wire.stats.tx_frames
        host.wire.send((frame,))
        host.injected += host.wire.stats.tx_frames - before

    def check_wire(self) -> None:
        """After the stacks are down: every frame put on one end of the wire was read at
        the other (by a stack, thrown away while its host was off, or still waiting)."""
        for src, dst in ((self.hosts[0], self.hosts[1]), (self.hosts[1], self.hosts[0])):
            sent = sum(p.sent for p in src.ports) + src.injected
            waiting = 0
            while batch := dst.wire.recv_batch(512):
                waiting += len(batch)
            read = sum(p.received + p.discarded for p in dst.ports) + waiting
            if sent != read:
                self.fail(f"wire {src.name}>{dst.name}: {sent} frames sent, {read} arrived")

    def fail(self, msg: str) -> None:
        """Record an invariant violation (the run fails; the first one is reported)."""
        self.trace.log("FAIL", msg)
        self.failures.append(msg)

    def dump(self) -> None:
        """Log every host's connections (state, sequence numbers, buffers): for a failure."""
        for h in self.hosts:
            if h.stack is None:
                continue
            for ep in h.stack.tcp.conns.values():
                info = ep.conn.info()
                keys = ("state", "snd_una", "snd_nxt", "snd_wnd", "rcv_nxt", "rcv_wnd",
                        "send_queued", "recv_queued", "ooo_segments", "retransmits")  # fmt: skip
                tr = ep.transport
                extra = (
                    f" tr_buffer={tr.get_write_buffer_size()} paused={not tr.is_reading()}"
                    if tr
                    else ""
                )
                self.trace.log(
                    "dump",
                    f"{h.name}:{ep.key[2]}->{ep.key[1]} "
                    + " ".join(f"{k}={getattr(info[k], 'name', info[k])}" for k in keys)
                    + extra,
                )

    def close_wires(self) -> None:
        for w in self._wires:
            w.close()

    def info(self) -> dict[str, Any]:
        return {h.name: h.stack.stats() if h.stack else None for h in self.hosts}
