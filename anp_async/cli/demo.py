"""``anp demo``: the kernel's arping and ping against the stack in every receive mode."""

from __future__ import annotations

import argparse

from .base import Command


def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wire", action="store_true", help="two stacks on the in-memory wire (no root needed)"
    )
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop")
    p.add_argument("--json", action="store_true", help="one JSON object per mode, no table")


async def cmd_demo(args: argparse.Namespace) -> int:
    """``anp demo``: the kernel's arping and ping against the stack in every mode."""
    from ..demo import run_demo

    return await run_demo(use_kernel=False if args.wire else None, json_out=args.json)


COMMAND = Command(
    "demo", "kernel arping/ping against the stack in every mode", _configure_demo, cmd_demo
)
