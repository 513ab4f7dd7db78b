"""``anp demo``: the Linux kernel's arping and ping against the stack, in every receive mode.

As root the demo creates its own network namespace ``anp-demo-<random>`` with a TAP inside
(kernel side 10.0.0.1/24, stack 10.0.0.2/24), runs the stack in this process and, for each
mode, runs ``arping -c 5`` and ``ping -c 20 -i 0.01`` inside the namespace while the stack
serves. The stack shares this process's event loop, so the tools run as asyncio
subprocesses (a blocking ``subprocess.run`` would stop the stack from answering).

Without root there is no TAP and no namespace: two stacks joined by the in-memory wire
ping each other instead (arping needs the kernel, so that column stays empty).

The namespace is removed on exit, also on an error or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .modes import MODES

STACK_IP = "10.0.0.2"
KERNEL_IP = "10.0.0.1"
TAP = "anpdemo0"
ARPING_COUNT = 5
PING_COUNT = 20
PING_INTERVAL = 0.01
TOOL_TIMEOUT = 20.0  # seconds allowed per tool run (bounded even if the stack is silent)

_COUNTERS = ("wakeups", "frames", "batches", "empty_polls", "cpu_seconds")


@dataclass
class ModeRow:
    """What one mode achieved in the demo."""

    mode: str
    arping_replies: int | None = None  # None: not run (in-memory wire)
    arping_sent: int = ARPING_COUNT
    ping_received: int = 0
    ping_sent: int = PING_COUNT
    rtt_ms: tuple[float, float, float] | None = None  # min, avg, max
    counters: dict[str, float] = field(default_factory=dict)
    tool_output: str = ""  # what arping and ping printed (shown when replies are missing)

    @property
    def ok(self) -> bool:
        arp_ok = self.arping_replies is None or self.arping_replies == self.arping_sent
        return arp_ok and self.ping_received == self.ping_sent


def parse_arping(out: str) -> int:
    """Replies counted by iputils arping (``Received N response(s)``)."""
    m = re.search(r"Received (\d+) response", out)
    if m:
        return int(m.group(1))
    return len(re.findall(r"^Unicast reply from", out, re.M))


def parse_ping(out: str) -> tuple[int, tuple[float, float, float] | None]:
    """(received, (min, avg, max) ms or None) from ping(8)'s summary."""
    m = re.search(r"(\d+) received", out)
    received = int(m.group(1)) if m else 0
    r = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/[\d.]+ ms", out)
    rtt = (float(r.group(1)), float(r.group(2)), float(r.group(3))) if r else None
    return received, rtt


async def run_tool(argv: list[str], timeout: float = TOOL_TIMEOUT) -> str:
    """Run a command without blocking the loop; its stdout+stderr (killed after ``timeout``)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return out.decode(errors="replace")


def _mode_counters(stack: Any) -> dict[str, float]:
    mode = stack.stats()["mode"]
    return {k: mode.get(k, 0) for k in _COUNTERS}


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in after}


async def _kernel_rows(progress: Any) -> list[ModeRow]:
    from .nic.netns import Netns, unique_name
    from .nic.tap import TapNic
    from .stack import Stack, StackConfig

    rows: list[ModeRow] = []
    ns = Netns.create(unique_name("anp-demo"))
    try:
        # A worker thread: pyroute2's blocking API refuses to run inside a running loop.
        nic = await asyncio.to_thread(TapNic.open, TAP, peer=f"{KERNEL_IP}/24", netns=ns)
        try:
            async with Stack(StackConfig(nic=nic, ip=f"{STACK_IP}/24")) as stack:
                progress(f"namespace {ns.name}: TAP {TAP} kernel {KERNEL_IP}, stack {STACK_IP}")
                for mode in MODES:
                    stack.set_mode(mode)
                    before = _mode_counters(stack)
                    row = ModeRow(mode)
                    progress(f"mode {mode}: arping -c {ARPING_COUNT}, ping -c {PING_COUNT}")
                    ns_exec = ["ip", "netns", "exec", ns.name]
                    arping = ["arping", "-c", str(ARPING_COUNT), "-w", str(ARPING_COUNT + 3)]
                    ping = ["ping", "-c", str(PING_COUNT), "-i", str(PING_INTERVAL), "-W", "1"]
                    # Both at once: iputils arping sends one probe per second at most.
                    arp_out, ping_out = await asyncio.gather(
                        run_tool([*ns_exec, *arping, "-I", TAP, STACK_IP]),
                        run_tool([*ns_exec, *ping, STACK_IP]),
                    )
                    row.arping_replies = parse_arping(arp_out)
                    row.ping_received, row.rtt_ms = parse_ping(ping_out)
                    row.tool_output = arp_out + ping_out
                    row.counters = _delta(_mode_counters(stack), before)
                    rows.append(row)
        finally:
            nic.close()
    finally:
        ns.delete()
    return rows


async def _wire_rows(progress: Any) -> list[ModeRow]:
    from .nic.wire import Wire
    from .stack import Stack, StackConfig

    rows: list[ModeRow] = []
    nic_a, nic_b = Wire.pair()
    async with (
        Stack(StackConfig(nic=nic_a, ip=f"{KERNEL_IP}/24")) as peer,
        Stack(StackConfig(nic=nic_b, ip=f"{STACK_IP}/24")) as stack,
    ):
        for mode in MODES:
            stack.set_mode(mode)
            before = _mode_counters(stack)
            row = ModeRow(mode)
            progress(f"mode {mode}: {PING_COUNT} pings from {KERNEL_IP} to {STACK_IP}")
            rtts: list[float] = []
            for _ in range(PING_COUNT):
                t0 = time.perf_counter()
                with contextlib.suppress(TimeoutError, OSError):
                    rtts.append(await peer.ping(STACK_IP, timeout=1.0) * 1000)
                await asyncio.sleep(max(0.0, PING_INTERVAL - (time.perf_counter() - t0)))
            row.ping_received = len(rtts)
            if rtts:
                row.rtt_ms = (min(rtts), sum(rtts) / len(rtts), max(rtts))
            row.counters = _delta(_mode_counters(stack), before)
            rows.append(row)
    return rows


def render_table(rows: list[ModeRow], title: str) -> Any:
    """The demo's rich table: one row per mode."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    t.add_column("mode")
    t.add_column("arping replies", justify="right")
    t.add_column("ping received", justify="right")
    t.add_column("rtt min/avg/max (ms)", justify="right")
    t.add_column("wakeups", justify="right")
    t.add_column("frames", justify="right")
    t.add_column("batches", justify="right")
    t.add_column("cpu (ms)", justify="right")
    for r in rows:
        arp = "-" if r.arping_replies is None else f"{r.arping_replies}/{r.arping_sent}"
        rtt = "-" if r.rtt_ms is None else "/".join(f"{x:.3f}" for x in r.rtt_ms)
        c = r.counters
        t.add_row(
            r.mode,
            arp,
            f"{r.ping_received}/{r.ping_sent}",
            rtt,
            str(int(c.get("wakeups", 0))),
            str(int(c.get("frames", 0))),
            str(int(c.get("batches", 0))),
            f"{c.get('cpu_seconds', 0) * 1000:.2f}",
        )
    return t


async def run_demo(
    use_kernel: bool | None = None, console: Any = None, json_out: bool = False
) -> int:
    """Run the demo and print its table; 0 when every arping and ping was answered.

    ``use_kernel`` None means "the kernel if we are root, the in-memory wire otherwise";
    ``json_out`` prints one JSON object per mode instead of the table.
    """
    from rich.console import Console

    # Wide enough for the table when the output is a pipe (rich assumes 80 columns).
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    if use_kernel is None:
        use_kernel = os.geteuid() == 0
    progress = console.print if console.is_terminal and not json_out else (lambda *_: None)
    if use_kernel:
        rows = await _kernel_rows(progress)
        title = (
            f"kernel (10.0.0.1) -> anp-async stack ({STACK_IP}) over a TAP: "
            f"arping -c {ARPING_COUNT}, ping -c {PING_COUNT} -i {PING_INTERVAL}"
        )
    else:
        if not json_out:
            console.print(
                "Not running as root (or --wire given): no TAP and no namespace, so two stacks "
                "joined by the in-memory wire ping each other instead of the kernel."
            )
        rows = await _wire_rows(progress)
        title = (
            f"anp-async stack ({KERNEL_IP}) -> anp-async stack ({STACK_IP}) on the "
            f"in-memory wire: {PING_COUNT} pings"
        )
    bad = [r.mode for r in rows if not r.ok]
    if json_out:
        import json
        from dataclasses import asdict

        for r in rows:
            rec = {k: v for k, v in asdict(r).items() if k != "tool_output"}
            print(json.dumps({"setup": "kernel" if use_kernel else "wire", **rec, "ok": r.ok}))
        return 1 if bad else 0
    console.print(render_table(rows, title))
    if bad:
        for r in rows:
            if not r.ok and r.tool_output:
                console.print(f"--- {r.mode}: tool output ---", markup=False)
                console.print(r.tool_output.rstrip(), markup=False, highlight=False)
        console.print(f"replies missing in mode(s): {', '.join(bad)}")
        return 1
    console.print("every request answered in every mode")
    return 0
