"""Invariants the simulator checks after every loop step and at the end of a run.

Step checks are cheap (a few integer comparisons per host); the per-connection memory
check runs every ``DEEP_EVERY`` steps. A violated invariant is recorded with
:meth:`World.fail` and ends the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..proto.tcp.connection import TcpState

if TYPE_CHECKING:
    from .world import Host, World

#: Steps between two checks of every connection's buffers.
DEEP_EVERY = 64
#: Most TCBs one simulated host may hold (the scenarios open far fewer).
MAX_TCBS = 4096
#: Most frames one fault injector may hold in its timers and rate queue.
MAX_HELD = 20_000


class Checker:
    """Runs the step and end checks over a world's hosts."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.steps = 0
        self.peak_tcbs = 0
        self.peak_held = 0

    def step(self) -> None:
        """After every loop step: memory bounds and fault accounting."""
        if self.world.failures:
            return
        self.steps += 1
        deep = self.steps % DEEP_EVERY == 0
        for host in self.world.hosts:
            self._host_step(host, deep)

    def _host_step(self, host: Host, deep: bool) -> None:
        stack, nic = host.stack, host.nic
        if stack is None or nic is None:
            return
        fail = self.world.fail
        ntcb = len(stack.tcp.conns)
        self.peak_tcbs = max(self.peak_tcbs, ntcb)
        if ntcb > MAX_TCBS:
            fail(f"{host.name}: {ntcb} TCBs (bound {MAX_TCBS})")
        held = nic.held()
        self.peak_held = max(self.peak_held, held)
        if held > MAX_HELD or len(nic._rate_queue) > nic.config.queue_limit:
            fail(f"{host.name}: fault injector holds {held} frames")
        self._accounting(host)
        if deep:
            self._memory(host)
            self._obligations(host)

    def _accounting(self, host: Host) -> None:
        """Every frame offered to the injector is dropped, held or on the wire (dups +1)."""
        nic, port = host.nic, host.port
        assert nic is not None and port is not None
        fs = nic.fault_stats
        lost = fs["dropped"] + fs["rate_dropped"] + fs["flap_dropped"]
        # Corrupted frames behind a virtio-net header are dropped (none in the sim).
        out = lost + nic.held() + port.calls
        if nic.offered + fs["duplicated"] != out:
            self.world.fail(
                f"{host.name}: fault accounting: offered {nic.offered} + duplicated "
                f"{fs['duplicated']} != lost {lost} + held {nic.held()} + sent {port.calls}"
            )

    def _memory(self, host: Host) -> None:
        stack = host.stack
        assert stack is not None
        fail = self.world.fail
        for ep in stack.tcp.conns.values():
            c = ep.conn
            info = c.info()
            cfg = c.cfg
            if info["send_queued"] > cfg.send_buffer:  # type: ignore[operator]
                fail(f"{host.name}: send buffer {info['send_queued']} > {cfg.send_buffer}")
            # autotuning may grow the window up to recv_buffer_max (0: it is off)
            rbuf = max(cfg.recv_buffer, cfg.recv_buffer_max)
            if info["recv_queued"] > rbuf + 65535:  # type: ignore[operator]
                fail(f"{host.name}: receive buffer {info['recv_queued']} > {rbuf}")
            if info["ooo_segments"] > cfg.max_ooo_segments:  # type: ignore[operator]
                fail(f"{host.name}: {info['ooo_segments']} out-of-order segments")
        pending = sum(n for _, n in stack.arp.pending())
        if pending > stack.arp.max_pending_ips * stack.arp.hold_per_ip:
            fail(f"{host.name}: ARP holds {pending} packets")
        if len(stack.arp.entries()) > stack.arp.max_entries:
            fail(f"{host.name}: {len(stack.arp.entries())} ARP entries")

    def _obligations(self, host: Host) -> None:
        """A connection that owes its peer something (data or a FIN in flight or waiting)
        has a deadline: the retransmission, persist or probe timer. Without one, nothing
        on our side ever sends again, and a peer that waits too hangs for good."""
        stack = host.stack
        assert stack is not None
        dirty = stack.tcp.dirty  # flushed (and re-timed) at the end of the receive batch
        deferred = stack.tcp.deferred  # flushed after the applications' turn (a loop pass)
        if deferred and stack.tcp._deferred_handle is None:
            self.world.fail(
                f"{host.name}: {len(deferred)} connections wait for an output pass that "
                "nothing scheduled"
            )
        for ep in stack.tcp.conns.values():
            c = ep.conn
            if not c.state.sends or ep in dirty or ep in deferred:
                continue
            data_end = c._sbuf_base + c.send_queued
            fin = c._fin_abs
            owed = (
                c.snd_una < c.snd_max
                or c.snd_nxt < data_end
                or (fin is not None and c.snd_max <= fin)
            )
            if owed and c.next_deadline() is None:
                self.world.fail(
                    f"{host.name}: {c!r} owes data (snd_max={c.snd_max}, queued up to "
                    f"{data_end}, FIN at {fin}, window {c.snd_wnd}) and has no timer"
                )

    # ------------------------------------------------------------------- end

    def settled(self) -> bool:
        """True when no host has a connection other than in TIME_WAIT."""
        for host in self.world.hosts:
            if host.stack is None:
                continue
            for ep in host.stack.tcp.conns.values():
                if ep.conn.state is not TcpState.TIME_WAIT:
                    return False
        return True

    def end(self) -> None:
        """After the scenario and the settle time: nothing stuck, counters add up."""
        fail = self.world.fail
        for host in self.world.hosts:
            stack = host.stack
            if stack is None:
                continue
            for ep in stack.tcp.conns.values():
                st = ep.conn.state
                if st is not TcpState.TIME_WAIT:
                    fail(f"{host.name}: connection :{ep.key[2]}->:{ep.key[1]} stuck in {st.name}")
            errs = stack._mode.stats.deliver_errors if stack._mode else 0
            if errs:
                fail(f"{host.name}: the receive path raised {errs} times")
            self._counters(host)

    def _counters(self, host: Host) -> None:
        """Every frame the mode delivered is counted by Ethernet: accepted or a drop."""
        stack, port = host.stack, host.port
        assert stack is not None and port is not None
        eth = stack.eth_counters
        errors = sum(v for k, v in eth.items() if k.startswith("eth_"))
        seen = eth["rx_frames"] + eth["not_for_us"] + errors
        mode = stack._mode
        delivered = mode.stats.frames if mode else 0
        if not (seen == delivered == port.received):
            self.world.fail(
                f"{host.name}: frames: port handed {port.received}, mode delivered "
                f"{delivered}, ethernet counted {seen}"
            )
