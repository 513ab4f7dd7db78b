"""What a stalled TCP test needs to say before it fails: every connection's full state.

``tcp_state(stack)`` reads every slot of each connection (sequence space, windows,
timers, the loss recovery and RACK-TLP state, buffer lengths), the endpoint's loop timer
and the transport's flow-control flags, plus the stack of every task still waiting.
``kernel_state(ns)`` is the other side's view from inside the test's namespace: the
kernel's sockets (``ss -tnie``), neighbours, link counters and TCP counters.
``bounded(aw, seconds, stack, ns=...)`` awaits with a deadline and, when it passes, fails
with both dumps instead of sitting until pytest's own timeout.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
from collections.abc import Awaitable
from typing import Any, TypeVar

from anp_async import Stack
from anp_async.nic.netns import Netns

T = TypeVar("T")


def _slots(obj: object, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name in skip or name in out:
                continue
            try:
                v = getattr(obj, name)
            except AttributeError:
                continue
            if hasattr(v, "__len__") and not isinstance(v, (str, bytes, int, float, tuple)):
                try:
                    v = f"<{type(v).__name__} len={len(v)}>"
                except TypeError:
                    pass
            out[name] = v
    return out


def tcp_state(stack: Stack) -> str:
    """Every TCP connection of ``stack`` with all its state, and every pending task."""
    f = io.StringIO()
    loop = stack.loop
    now = stack.now() if loop is not None else 0.0
    print(f"now={now:.4f}", file=f)
    for key, ep in list(stack.tcp.conns.items()):
        conn = ep.conn
        print(f"== {key!r} {conn!r} next_deadline={conn.next_deadline()}", file=f)
        print(f"   info={conn.info()}", file=f)
        print(f"   conn={_slots(conn, ('cfg', 'counters', 'recovery', 'rtt', 'cc'))}", file=f)
        rec = conn.recovery
        print(f"   recovery={_slots(rec, ('counters', 'sb', 'rack'))}", file=f)
        print(f"   sack_blocks={getattr(rec.sb, 'blocks', None)!r}", file=f)
        if rec.rack is not None:
            rk = _slots(rec.rack, ("segs",))
            segs = rec.rack.segs
            rk["segs"] = f"{len(segs)}: {segs[:3]!r} .. {segs[-3:]!r}"
            print(f"   rack={rk}", file=f)
        print(f"   counters={ {k: v for k, v in conn.counters.items() if v} }", file=f)
        print(f"   endpoint={_slots(ep, ('layer', 'key', 'conn'))}", file=f)
        tr = ep.transport
        if tr is not None:
            print(f"   transport={ {k: v for k, v in vars(tr).items() if k != '_extra'} }", file=f)
    layers = {k: v for k, v in stack.stats().items() if k not in ("tcp", "mode")}
    tcp = {k: v for k, v in stack.stats()["tcp"].items() if k != "connections"}
    print(f"stack counters: {layers}\ntcp host counters: {tcp}", file=f)
    if loop is not None:
        timers = [h for h in getattr(loop, "_scheduled", []) if not h.cancelled()]
        print(
            f"loop timers: {len(timers)} {[round(h.when() - now, 4) for h in timers][:20]}", file=f
        )
        for task in asyncio.all_tasks(loop):
            if task is asyncio.current_task(loop):
                continue
            print(f"-- task {task.get_name()}", file=f)
            task.print_stack(limit=12, file=f)
    return f.getvalue()


def kernel_state(ns: Netns) -> str:
    """The kernel's side of the test network, read with its own tools (5 s each at most)."""
    out = []
    for argv in (
        ["ss", "-tanieom"],
        ["ip", "-s", "neigh"],
        ["ip", "-s", "link"],
        ["nstat", "-as"],
    ):
        try:
            r = subprocess.run(
                ["ip", "netns", "exec", ns.name, *argv], capture_output=True, text=True, timeout=5
            )
            out.append(f"$ {' '.join(argv)}\n{r.stdout}{r.stderr}")
        except (OSError, subprocess.TimeoutExpired) as e:
            out.append(f"$ {' '.join(argv)}: {e!r}")
    return "\n".join(out)


async def bounded(
    aw: Awaitable[T], seconds: float, stack: Stack, what: str = "", ns: Netns | None = None
) -> T:
    """``await aw`` for at most ``seconds``; past that, fail with ``tcp_state(stack)`` (and
    ``kernel_state(ns)`` when the peer is the kernel in namespace ``ns``)."""
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        kernel = f"\n-- the kernel's side:\n{kernel_state(ns)}" if ns is not None else ""
        raise AssertionError(
            f"{what or 'transfer'} made no end in {seconds} s:\n{tcp_state(stack)}{kernel}"
        ) from None
