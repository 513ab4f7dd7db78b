"""``anp trace`` over the control socket, the stack's side: it streams trace records (the
command's side, which reads them, is :func:`anp_async.control.trace_stream`).

Request ``{"cmd": "trace", "count": N, "filter": EXPR}`` (both optional). The stack
answers ``{"ok": true, "tracing": true}``, then one ``{"trace": record}`` line per record,
and ``{"ok": true, "end": true, "frames": n, "lost": m}`` when ``count`` frames have been
traced; a client that closes the connection stops the trace. While nobody traces, the
stack runs without the tracer (see :mod:`anp_async.obs.trace`). Records that a slow
reader cannot take (more than :data:`MAX_QUEUED` waiting) are counted as lost, never
buffered without bound.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .trace import TraceFilterError, Tracer

MAX_QUEUED = 10_000


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, default=str, separators=(",", ":")).encode() + b"\n"


async def serve_trace(
    stack: Any, req: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Stream trace records of ``stack`` to one control client (the stack's side)."""
    count = req.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        writer.write(_line({"ok": False, "error": "'count' must be a positive integer"}))
        return
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lost = 0

    def sink(r: dict[str, Any]) -> None:
        nonlocal lost
        if queue.qsize() >= MAX_QUEUED:
            lost += 1
        else:
            queue.put_nowait(r)

    try:
        tracer = Tracer(stack, sink, count=count, filter=req.get("filter"))
        tracer.attach()
    except (TraceFilterError, RuntimeError) as e:
        writer.write(_line({"ok": False, "error": str(e)}))
        return
    gone = asyncio.ensure_future(reader.read(1))  # the client hung up (or sent anything)
    try:
        writer.write(_line({"ok": True, "tracing": True}))
        await writer.drain()
        while not (tracer.done and queue.empty()):
            get = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                return
            writer.write(_line({"trace": get.result()}))
            if queue.empty():
                await writer.drain()
        writer.write(_line({"ok": True, "end": True, "frames": tracer.emitted, "lost": lost}))
        await writer.drain()
    finally:
        tracer.detach()
        gone.cancel()
