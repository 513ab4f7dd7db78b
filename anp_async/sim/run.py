"""One simulation run: a seed chooses the scenario, the faults, the receive modes and the
TCP settings; the run replays exactly from that seed.

``run_seed(seed)`` builds a :class:`~.loop.SimEventLoop` (virtual clock), two hosts on the
in-memory wire behind seeded fault injectors, runs the scenario, lets the connections
settle, checks the invariants and returns a :class:`SimResult` whose ``digest`` is the
sha256 of the event log. Nothing escapes: any exception becomes a failure of the seed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from ..nic.faults import FaultConfig
from ..proto.tcp.config import TcpConfig
from .invariants import Checker
from .loop import DETERMINISTIC_MODES, SimEventLoop, SimStalled
from .scenarios import SCENARIOS, Ctx, Stuck
from .trace import Trace
from .world import World

__all__ = ["FAULT_PROFILES", "SimResult", "parse_faults", "run_seed"]

#: Fault profiles a seed chooses from (``--faults NAME``), each drawn with seeded values.
FAULT_PROFILES = (
    "clean", "loss", "duplicate", "reorder", "corrupt", "delay", "rate", "flap", "asymmetric",
    "mix",
)  # fmt: skip

#: FaultConfig fields ``--faults key=value,...`` may set (both directions).
_FAULT_KEYS = {
    "loss": float, "duplicate": float, "dup": float, "reorder": float, "reorder_delay": float,
    "delay": float, "jitter": float, "corrupt": float, "rate_bps": float, "queue_limit": int,
    "flap_every": float, "flap_down": float,
}  # fmt: skip

#: Virtual seconds a run may last before it counts as stuck (scenario plus settling).
RUN_LIMIT = 7200.0
#: Virtual seconds the connections get to reach CLOSED/TIME_WAIT after the scenario.
SETTLE_LIMIT = 600.0


@dataclass
class SimResult:
    """What one seed did."""

    seed: int
    scenario: str
    faults: str
    modes: tuple[str, str]
    ok: bool
    failures: list[str]
    digest: str
    virtual_seconds: float
    wall_seconds: float
    steps: int
    events: int
    lines: list[str] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        head = (
            f"seed={self.seed} scenario={self.scenario} faults={self.faults} "
            f"modes={'/'.join(self.modes)}"
        )
        if self.ok:
            return f"{head} ok"
        return f"{head} FAIL: {self.failures[0]}"


def parse_faults(text: str) -> tuple[str, dict[str, float]]:
    """``--faults``: a profile name, or ``key=value,...`` FaultConfig fields (ValueError)."""
    text = text.strip()
    if text in FAULT_PROFILES:
        return text, {}
    values: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in _FAULT_KEYS:
            raise ValueError(
                f"--faults: {item!r} is neither a profile ({', '.join(FAULT_PROFILES)}) "
                f"nor key=value with a key from {', '.join(sorted(_FAULT_KEYS))}"
            )
        try:
            values["duplicate" if key == "dup" else key] = _FAULT_KEYS[key](raw)
        except ValueError:
            raise ValueError(f"--faults: {key} needs a number, got {raw!r}") from None
    if not values:
        raise ValueError("--faults: empty")
    FaultConfig(**values)  # type: ignore[arg-type]  # validate ranges now, not per seed
    return "custom", values


def _draw_faults(
    rng: random.Random, profile: str, custom: dict[str, float]
) -> tuple[FaultConfig, FaultConfig]:
    """Fault configs for a->b and b->a transmit, drawn for ``profile``."""
    base = {"delay": rng.choice([0.0, 0.0001, 0.001, 0.01, 0.05])}
    both: dict[str, Any] = {}
    other: dict[str, Any] = {}
    if profile == "custom":
        both = dict(custom)
        base = {}
    elif profile == "loss":
        both = {"loss": rng.uniform(0.01, 0.15)}
    elif profile == "duplicate":
        both = {"duplicate": rng.uniform(0.01, 0.2)}
    elif profile == "reorder":
        both = {"reorder": rng.uniform(0.02, 0.3), "reorder_delay": rng.uniform(0.0005, 0.03)}
    elif profile == "corrupt":
        both = {"corrupt": rng.uniform(0.005, 0.05)}
    elif profile == "delay":
        d = rng.uniform(0.001, 0.2)
        both = {"delay": d, "jitter": rng.uniform(0, d)}
        base = {}
    elif profile == "rate":
        both = {"rate_bps": rng.choice([1e6, 1e7, 1e8]), "queue_limit": rng.choice([10, 50, 500])}
    elif profile == "flap":
        every = rng.uniform(1.0, 20.0)
        both = {"flap_every": every, "flap_down": rng.uniform(0.05, min(2.0, every / 3))}
    elif profile == "asymmetric":
        both = {"loss": rng.uniform(0.05, 0.2)}
        other = {"loss": 0.0}
    elif profile == "mix":
        both = {
            "loss": rng.uniform(0, 0.05),
            "duplicate": rng.uniform(0, 0.05),
            "reorder": rng.uniform(0, 0.1),
            "corrupt": rng.uniform(0, 0.02),
            "jitter": rng.uniform(0, 0.005),
        }
    cfg_ab = FaultConfig(**{**base, **both}, seed=rng.getrandbits(32), direction="tx")
    cfg_ba = FaultConfig(**{**base, **both, **other}, seed=rng.getrandbits(32), direction="tx")
    if profile == "asymmetric" and rng.random() < 0.5:
        cfg_ab, cfg_ba = cfg_ba, cfg_ab
    return cfg_ab, cfg_ba


def _draw_tcp(rng: random.Random) -> TcpConfig:
    """Linux-like TCP settings with seeded variations (options on/off, buffers, timers)."""
    return TcpConfig(
        send_buffer=rng.choice([16 * 1024, 64 * 1024, 256 * 1024]),
        recv_buffer=rng.choice([4 * 1024, 16 * 1024, 64 * 1024, 256 * 1024]),
        window_scale=rng.random() < 0.8,
        sack=rng.random() < 0.8,
        timestamps=rng.random() < 0.8,
        nodelay=rng.random() < 0.5,
        delayed_ack=rng.choice([0.0, 0.04, 0.2]),
        rto_max=rng.choice([10.0, 60.0]),
        max_retries=10,
        msl=rng.choice([0.5, 5.0, 30.0]),
        congestion=rng.choice(["newreno", "cubic"]),
        max_ooo_segments=rng.choice([4, 256]),
        initial_cwnd_segments=rng.choice([1, 4, 10]),
    )


class _LogCatcher(logging.Handler):
    """Errors the stack logs (a callback that raised inside it) fail the run."""

    def __init__(self, world: World) -> None:
        super().__init__(logging.ERROR)
        self.world = world

    def emit(self, record: logging.LogRecord) -> None:
        msg = f"logged error: {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            msg += f": {type(exc).__name__}: {exc}"
            for line in traceback.format_exception(exc):
                for part in line.rstrip().splitlines():
                    self.world.trace.log("traceback", part)
        self.world.fail(msg)


def run_seed(
    seed: int,
    scenario: str | None = None,
    faults: str | None = None,
    *,
    trace: bool = False,
    scale: float = 1.0,
    max_steps: int = 2_000_000,
) -> SimResult:
    """Run one seed; never raises for anything the code under test does."""
    if scenario is not None and scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    profile, custom = parse_faults(faults) if faults else (None, {})
    wall0 = time.perf_counter()
    rng = random.Random(seed)
    random.seed(seed)  # ephemeral ports, IP IDs: the stack draws them from `random`
    # Draw everything even when given, so the rest of the seed's world stays the same.
    name = rng.choice(sorted(SCENARIOS))
    name = scenario or name
    drawn = rng.choice(FAULT_PROFILES)
    profile = profile or drawn
    modes = (rng.choice(DETERMINISTIC_MODES), rng.choice(DETERMINISTIC_MODES))
    tcp = _draw_tcp(rng)
    tcp_b = dataclasses.replace(tcp) if rng.random() < 0.5 else _draw_tcp(rng)
    fcfg = _draw_faults(rng, profile, custom)
    start = rng.choice([0.0, 1.0, 86400.0 * 30, rng.uniform(0, 5e6)])
    loop = SimEventLoop(start=start, max_steps=max_steps)
    tr = Trace(loop, keep=trace)
    world = World(loop, rng, tr)
    checker = Checker(world)
    tr.log("sim", f"seed={seed} scenario={name} faults={profile} modes={modes} start={start}")
    tr.log("sim", f"faults a>b {fcfg[0]}")
    tr.log("sim", f"faults b>a {fcfg[1]}")
    tr.log("sim", f"tcp a {tcp}")
    tr.log("sim", f"tcp b {tcp_b}")

    shutting_down = False

    def on_exception(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if shutting_down:
            return  # tasks the simulator cancels at the end complain about it
        exc = context.get("exception")
        msg = context.get("message", "")
        world.fail(f"exception in loop callback: {msg} {type(exc).__name__ if exc else ''}: {exc}")

    loop.set_exception_handler(on_exception)
    catcher = _LogCatcher(world)
    pkg_log = logging.getLogger("anp_async")
    pkg_log.addHandler(catcher)
    propagate, pkg_log.propagate = pkg_log.propagate, False  # recorded in the trace instead
    a, b = world.add_pair(fcfg, modes, (tcp, tcp_b))
    ctx = Ctx(world, a, b, scale=scale)

    async def main() -> None:
        world.start(a)
        world.start(b)
        loop.step_hook = checker.step
        try:
            async with asyncio.timeout(RUN_LIMIT) as cm:
                await SCENARIOS[name](ctx)
        except Stuck:
            return
        except TimeoutError as e:
            if cm.expired():
                world.fail(f"scenario {name} did not finish within {RUN_LIMIT:.0f} virtual s")
            else:
                world.fail(f"TimeoutError escaped the scenario: {e}")
            return
        deadline = loop.time() + SETTLE_LIMIT
        while not checker.settled() and loop.time() < deadline:
            await asyncio.sleep(1.0)
        checker.end()

    try:
        loop.run_until_complete(main())
    except SimStalled as e:
        world.fail(str(e))
    except Exception as e:  # anything the code under test raised is a failure of the seed
        world.fail(f"{type(e).__name__} escaped: {e}")
    finally:
        loop.step_hook = None
        shutting_down = True
        totals = _totals(world, checker)
        tr.log("sim", "totals " + " ".join(f"{k}={v}" for k, v in totals.items()))
        try:
            loop.run_until_complete(_shutdown(world))
            loop.run_until_complete(loop.shutdown_asyncgens())
            world.check_wire()
        except Exception as e:
            world.fail(f"shutdown: {type(e).__name__}: {e}")
        pkg_log.removeHandler(catcher)
        pkg_log.propagate = propagate
        try:
            _cancel_all(loop)
        except Exception as e:
            world.fail(f"shutdown: {type(e).__name__}: {e}")
        loop.close()
        world.close_wires()
    return SimResult(
        seed=seed,
        scenario=name,
        faults=profile,
        modes=modes,
        ok=not world.failures,
        failures=list(world.failures),
        digest=tr.digest,
        virtual_seconds=loop.time() - start,
        wall_seconds=time.perf_counter() - wall0,
        steps=loop.steps,
        events=tr.count,
        lines=tr.lines,
        totals=totals,
    )


def _totals(world: World, checker: Checker) -> dict[str, int]:
    """Figures for the report: connections, bytes, retransmissions, faults, peaks."""
    out: dict[str, int] = {
        "app_bytes": world.app_bytes,
        "peak_tcbs": checker.peak_tcbs,
        "peak_held": checker.peak_held,
    }
    for host in world.hosts:
        frames = host.retired.get("sent", 0) + (host.port.sent if host.port else 0)
        out[f"{host.name}_frames"] = frames
        stack = host.stack
        if stack is None:
            continue
        st = stack.tcp.stats()
        for key in ("active_opens", "passive_opens", "conn_retransmits"):
            out[f"{host.name}_{key}"] = int(st.get(key, 0))
    return out


async def _shutdown(world: World) -> None:
    for host in world.hosts:
        if host.stack is not None:
            await host.stack.close(linger=0.0)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
