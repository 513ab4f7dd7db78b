"""What every example shares: a network namespace of its own with a TAP inside, the kernel
at 10.0.0.1 on one side and a stack at 10.0.0.2 on the other; all removed on exit.

    async with lab(mode="adaptive") as (stack, ns):
        ...                      # the stack is started; ns.run([...]) runs kernel tools
        await in_ns(ns, fn)      # run a blocking function with its sockets in ns

Needs root (namespaces, /dev/net/tun), as ``anp demo`` and ``anp up`` do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from anp_async import Stack, StackConfig  # noqa: E402
from anp_async.nic.netns import Netns, unique_name  # noqa: E402
from anp_async.nic.tap import TapNic  # noqa: E402

KERNEL_IP = "10.0.0.1"
STACK_IP = "10.0.0.2"
T = TypeVar("T")


@contextlib.asynccontextmanager
async def lab(mode: str = "interrupt", **mode_params: int) -> AsyncIterator[tuple[Stack, Netns]]:
    """A started stack on a TAP in a fresh namespace; everything removed afterwards."""
    if os.geteuid() != 0:
        raise SystemExit("this example needs root (network namespaces, /dev/net/tun)")
    # ANP_EXAMPLE_NETNS names the namespace (the examples test checks it is gone after).
    ns = Netns.create(os.environ.get("ANP_EXAMPLE_NETNS") or unique_name("anp-ex"))
    try:
        nic = await asyncio.to_thread(TapNic.open, "anpex0", peer=f"{KERNEL_IP}/24", netns=ns)
        cfg = StackConfig(nic=nic, ip=f"{STACK_IP}/24", mode=mode, mode_params=mode_params)
        async with Stack(cfg) as stack:
            yield stack, ns
    finally:
        ns.delete()


async def in_ns(ns: Netns, fn: Callable[..., T], *args: Any) -> T:
    """Run the blocking ``fn(*args)`` in a worker thread that sits in namespace ``ns``, so
    the kernel sockets it opens belong there (the kernel side of the TAP)."""

    def run() -> T:
        with ns.enter():
            return fn(*args)

    return await asyncio.to_thread(run)
