"""Pieces shared by the benchmark harness and its peer processes.

The peers (``anp_async.bench.kernel_peer``, ``anp_async.bench.stack_peer``) talk to the harness with one JSON
object per line on stdout; a measuring client prints :data:`WARM_MARK` once its warm-up is
over, so the harness can sample the CPU time of the process under test exactly around the
measured requests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

N = TypeVar("N", int, float)

#: Well-known ports the peers listen on (RFC 862 echo, RFC 863 discard).
ECHO_PORT = 7
SINK_PORT = 9

#: Largest UDP payload (and ICMP echo data) an IPv4 datagram can carry: 65535 - 20 - 8.
MAX_DATAGRAM_PAYLOAD = 65507

#: Printed (alone on a line) by a measuring client when warm-up ends.
WARM_MARK = "WARM"

#: Seconds a datagram echo may take before it counts as lost (and fails the run).
DATAGRAM_TIMEOUT = 1.0

#: Block the bulk-transfer sender repeats; its content derives from the seed.
BULK_BLOCK = 1 << 20

#: Header of a livelock datagram: sequence number.
SEQ = struct.Struct("!Q")

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def number_arg(
    convert: Callable[[str], N], valid: Callable[[N], bool], message: str
) -> Callable[[str], N]:
    """An argparse type: ``convert(text)`` if ``valid`` holds, else one line built from
    ``message`` (``{text!r}`` is the offending text). NaN and infinities fail ``valid``."""

    def parse(text: str) -> N:
        try:
            v = convert(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(message.format(text=text)) from None
        if not valid(v):
            raise argparse.ArgumentTypeError(message.format(text=text))
        return v

    return parse


def emit(obj: dict[str, Any]) -> None:
    """Write one JSON line to stdout for the harness."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def mark_warm() -> None:
    """Tell the harness the measured part starts now."""
    sys.stdout.write(WARM_MARK + "\n")
    sys.stdout.flush()


def payload_source(seed: int, size: int) -> bytes:
    """``2 * size`` seeded random bytes; request ``i`` is a ``size`` slice of it."""
    return random.Random(f"{seed}:{size}").randbytes(2 * size)


def request_offset(i: int, size: int) -> int:
    """Where request ``i`` starts in :func:`payload_source` (differs between neighbours,
    so a late or duplicated echo never matches the request in flight)."""
    return (i * 7919) % (size + 1)


def bulk_block(seed: int) -> bytes:
    """The 1 MiB block a bulk sender repeats (seeded)."""
    return random.Random(f"bulk:{seed}").randbytes(BULK_BLOCK)


#: What a bulk sender writes before the stream: the seed its blocks derive from.
BULK_HEADER = struct.Struct("!Q")


class BulkCheck:
    """A bulk receiver's check of the stream, byte for byte, as it arrives.

    The sender repeats :func:`bulk_block` of a seed it announces in a
    :data:`BULK_HEADER`; the receiver compares each chunk with the same bytes of that
    stream (``bytes.startswith`` at the chunk's offset in the block written twice: a
    memcmp, ~0.01 ms/MB). Hashing the stream instead (sha256, ~0.5 ms/MB here) made
    hashlib half of every receiver's CPU, the stack's included, and measured it instead
    of the network stack; a comparison checks more (every byte, in place) for a fiftieth
    of the cost.
    """

    __slots__ = ("_twice", "bytes", "ok")

    def __init__(self, seed: int) -> None:
        block = bulk_block(seed)
        self._twice = block + block
        #: Bytes checked so far, and whether every one of them matched.
        self.bytes = 0
        self.ok = True

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Check the next ``len(data)`` bytes of the stream."""
        view = memoryview(data)
        while view:
            off = self.bytes % BULK_BLOCK
            piece = view[:BULK_BLOCK]
            if self.ok and not self._twice.startswith(piece, off):
                self.ok = False
            self.bytes += len(piece)
            view = view[BULK_BLOCK:]


#: Where a latency phase puts the process under test and its peer: ``free`` leaves both to
#: the scheduler, ``same`` pins both to CPU 0, ``apart`` the one under test to CPU 0 and the
#: peer to CPU 1. The CPU a request costs depends on it: a wake-up across CPUs costs an
#: inter-processor interrupt and, on an idle CPU, the way out of its idle state (in a VM,
#: exits to the hypervisor), paid in the time of the process that wakes or is woken;
#: on one CPU the two processes hand over to each other directly.
PLACEMENTS = {"free": (None, None), "same": (0, 0), "apart": (0, 1)}


#: A process whose CPU is that of other processes: a multi-queue stack peer (its pid) and
#: its workers' pids (``anp bench ... --queues N``); :func:`proc_cpu_ns` sums them.
CPU_GROUPS: dict[int, list[int]] = {}


def proc_cpu_ns(pid: int) -> int:
    """CPU time (user + system, ns) of process ``pid``, all its threads, living and exited;
    for a pid in :data:`CPU_GROUPS`, the sum over its group (-1 if one of them is gone).

    Linux gives every process a CPU-time clock, ``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``
    = ``(~pid << 3) | 2`` (see ``clock_getcpuclockid(3)``): nanosecond resolution, unlike
    the 10 ms ticks of ``/proc/PID/stat``. Returns -1 when the process is gone.
    """
    group = CPU_GROUPS.get(pid)
    if group:
        each = [proc_cpu_ns(p) for p in group]
        return -1 if min(each) < 0 else sum(each)
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2)
    except OSError:
        return -1


def proc_sys_ns(pid: int) -> int:
    """System (kernel) CPU time of process ``pid`` in ns, from ``/proc/PID/stat`` (clock
    ticks, 10 ms: read it over spans of seconds); summed over a :data:`CPU_GROUPS` group;
    -1 when a process is gone.

    Which part of :func:`proc_cpu_ns` the kernel spent on the process's behalf: for the
    stack, its TAP reads and writes -- and a TAP write runs the kernel's receive of the
    frame (IP, TCP, waking the reader) in the writer's time, as a NIC's interrupt would
    on real hardware.
    """
    group = CPU_GROUPS.get(pid)
    if group:
        each = [proc_sys_ns(p) for p in group]
        return -1 if min(each) < 0 else sum(each)
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return -1
    # fields[0] is the state (stat field 3): stime is stat field 15.
    return int(fields[12]) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_summary(samples_ns: Sequence[int], wall_ns: int) -> dict[str, float | int]:
    """count, mean, p50/p90/p99/p99.9, min, max (microseconds) and request rate."""
    s = sorted(samples_ns)
    n = len(s)
    out: dict[str, float | int] = {"count": n}
    out["mean_us"] = sum(s) / n / 1e3 if n else math.nan
    for p in PERCENTILES:
        out[f"p{p:g}_us"] = percentile(s, p) / 1e3
    out["min_us"] = s[0] / 1e3 if n else math.nan
    out["max_us"] = s[-1] / 1e3 if n else math.nan
    out["rate_rps"] = n / (wall_ns / 1e9) if wall_ns > 0 else math.nan
    return out


def profiled(out_dir: str, name: str, run: Callable[[], int]) -> int:
    """Run ``run()`` under cProfile and a garbage-collector clock; write
    ``out_dir/<name>-<pid>.prof`` (pstats) and ``<name>-<pid>.gc.json`` (passes and
    seconds per generation, objects collected) when it returns or raises."""
    import cProfile
    import gc

    gc_stats = {g: {"passes": 0, "seconds": 0.0, "collected": 0} for g in (0, 1, 2)}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        g = gc_stats[info["generation"]]
        g["passes"] += 1
        g["seconds"] += time.perf_counter() - started[0]
        g["collected"] += info["collected"]

    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{name}-{os.getpid()}")
    gc.callbacks.append(on_gc)
    prof = cProfile.Profile()
    try:
        return prof.runcall(run)
    finally:
        gc.callbacks.remove(on_gc)
        prof.dump_stats(stem + ".prof")
        with open(stem + ".gc.json", "w") as f:
            json.dump({"cpu_s": time.process_time(), "gc": gc_stats}, f, indent=1)
