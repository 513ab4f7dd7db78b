"""A tiny HTTP endpoint that serves a stack's counters for Prometheus (``anp up --metrics``).

``GET /metrics`` answers :func:`anp_async.obs.metrics.render` of ``stack.stats()`` in the
OpenMetrics format when the client's ``Accept`` names it, else in Prometheus' text format;
``GET /`` a one-line pointer; anything else 404. It runs on the stack itself (its TCP), so
the endpoint lives on the stack's own address, not on the host's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..obs.metrics import OPENMETRICS_TYPE, PROMETHEUS_TYPE, render

MAX_HEADER = 8 * 1024


def _response(status: str, body: bytes, ctype: str, close: bool) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    head += "Server: anp-async\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    return head.encode() + body


def metrics_handler(
    stats: Callable[[], dict[str, Any]] | None = None,
    *,
    render_text: Callable[[bool], Awaitable[str]] | None = None,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A stream handler serving ``GET /metrics`` from ``stats()`` (keep-alive, bounded), or
    from ``await render_text(openmetrics)`` (a multi-queue host's workers ask the host)."""
    if (stats is None) == (render_text is None):
        raise ValueError("metrics_handler takes stats or render_text, one of them")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                if len(head) > MAX_HEADER:
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    k, sep, v = line.partition(":")
                    if sep:
                        headers[k.strip().lower()] = v.strip()
                close = headers.get("connection", "").lower() == "close"
                if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
                    writer.write(_response("405 Method Not Allowed", b"GET only\n",
                                           "text/plain", True))  # fmt: skip
                    await writer.drain()
                    return
                path = parts[1].split("?", 1)[0]
                if path == "/metrics":
                    om = "application/openmetrics-text" in headers.get("accept", "")
                    ctype = OPENMETRICS_TYPE if om else PROMETHEUS_TYPE
                    status = "200 OK"
                    if render_text is None:
                        assert stats is not None
                        body = render(stats(), openmetrics=om).encode()
                    else:
                        try:
                            body = (await render_text(om)).encode()
                        except (OSError, TimeoutError, ValueError) as e:
                            body, ctype = f"counters unavailable: {e}\n".encode(), "text/plain"
                            status = "503 Service Unavailable"
                elif path == "/":
                    body, ctype, status = b"anp-async: see /metrics\n", "text/plain", "200 OK"
                else:
                    body, ctype, status = b"not found\n", "text/plain", "404 Not Found"
                resp = _response(status, body, ctype, close)
                if parts[0] == "HEAD":
                    resp = resp[: resp.index(b"\r\n\r\n") + 4]
                writer.write(resp)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()

    return handle
