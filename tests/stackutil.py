"""Helpers shared by the stack tests: build stacks on a wire or a TAP, run kernel tools."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from anp_async import Stack, StackConfig, TcpConfig
from anp_async.modes import MODES
from anp_async.nic.faults import FaultConfig, FaultyNic
from anp_async.nic.netns import Netns
from anp_async.nic.wire import Wire

#: Parameters that make each mode behave distinctly in tests.
MODE_PARAMS: dict[str, dict[str, int]] = {
    "interrupt": {},
    "coalesce": {"rx_frames": 8, "rx_usecs": 100},
    "poll": {"budget": 64},
    "adaptive": {"weight": 64},
}
ALL_MODES = list(MODES)


def fast_tcp(**kw: Any) -> TcpConfig:
    """TCP settings for tests: short timers so loss recovery and TIME_WAIT are quick."""
    base: dict[str, Any] = dict(rto_min=0.05, rto_initial=0.2, msl=0.5, syn_retries=4)
    base.update(kw)
    return TcpConfig(**base)


@contextlib.asynccontextmanager
async def wire_stacks(
    mode: str = "interrupt",
    faults: FaultConfig | None = None,
    tcp: TcpConfig | None = None,
    mode_b: str | None = None,
) -> AsyncIterator[tuple[Stack, Stack]]:
    """Two stacks, 10.0.0.1 and 10.0.0.2, joined by the in-memory wire."""
    nic_a, nic_b = Wire.pair()
    if faults is not None:
        # Impair each side's transmit only, so every frame meets the faults exactly once.
        nic_a = FaultyNic(nic_a, dataclasses.replace(faults, direction="tx"))
        nic_b = FaultyNic(nic_b, dataclasses.replace(faults, direction="tx", seed=faults.seed + 1))
    cfg_a = StackConfig(
        nic=nic_a, ip="10.0.0.1/24", mode=mode, mode_params=MODE_PARAMS[mode], tcp=tcp or fast_tcp()
    )
    mb = mode_b or mode
    cfg_b = StackConfig(
        nic=nic_b, ip="10.0.0.2/24", mode=mb, mode_params=MODE_PARAMS[mb], tcp=tcp or fast_tcp()
    )
    async with Stack(cfg_a) as a, Stack(cfg_b) as b:
        yield a, b


async def run_in_ns(
    ns: Netns, argv: Sequence[str], timeout: float = 60.0, stdin: bytes | None = None
) -> tuple[int, str, str]:
    """Run a kernel-side tool in ``ns`` without blocking the loop the stack runs on."""
    proc = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        ns.name,
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def python_in_ns(
    ns: Netns, code: str, ready: bytes = b"ready", timeout: float = 10.0
) -> asyncio.subprocess.Process:
    """Start ``python3 -c code`` in ``ns`` (stdout piped) and wait for its line holding
    ``ready``; the caller reads the rest and waits for it."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.name, "python3", "-c", code, stdout=asyncio.subprocess.PIPE
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        assert ready in line, line
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc


def ping_received(output: str) -> int:
    m = re.search(r"(\d+) (?:packets )?received", output)
    return int(m.group(1)) if m else -1


def ping_rtts(output: str) -> tuple[float, float, float] | None:
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)", output)
    return (float(m.group(1)), float(m.group(2)), float(m.group(3))) if m else None


def arping_received(output: str) -> int:
    m = re.search(r"Received (\d+) response", output)
    return int(m.group(1)) if m else -1
