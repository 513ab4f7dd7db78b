"""A tiny HTTP/1.1 responder for the reference application's ``curl`` direction.

Two resources, enough for a kernel-side ``curl`` to exchange checked data with the stack:

- ``GET /pattern/N`` answers N bytes of the echo pattern (:mod:`anp_async.apps.echo`),
  streamed in chunks, so curl's output can be checked against the same pattern.
- ``POST /echo`` answers the request body back, byte for byte (``Content-Length`` bodies).

Requests are parsed strictly and bounded (header size, body size); anything else gets a
4xx. Connections are kept alive between requests, as HTTP/1.1 says.
"""

from __future__ import annotations

import asyncio

from .echo import CHUNK, expected

MAX_HEADER = 16 * 1024
MAX_BODY = 1 << 30


def _response_head(status: str, length: int, ctype: str = "application/octet-stream") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\n"
        "Server: anp-async\r\n\r\n"
    ).encode()


async def _send_error(writer: asyncio.StreamWriter, status: str) -> None:
    body = status.encode() + b"\n"
    writer.write(_response_head(status, len(body), "text/plain") + body)
    await writer.drain()


async def http_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve requests on one connection until the client closes it."""
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed between requests
            except asyncio.LimitOverrunError:
                await _send_error(writer, "431 Request Header Fields Too Large")
                return
            if len(head) > MAX_HEADER:
                await _send_error(writer, "431 Request Header Fields Too Large")
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, _version = lines[0].split(" ", 2)
            except ValueError:
                await _send_error(writer, "400 Bad Request")
                return
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if method == "GET" and target.startswith("/pattern/"):
                try:
                    size = int(target.rsplit("/", 1)[1])
                except ValueError:
                    await _send_error(writer, "400 Bad Request")
                    return
                if not 0 <= size <= MAX_BODY:
                    await _send_error(writer, "413 Content Too Large")
                    return
                writer.write(_response_head("200 OK", size))
                sent = 0
                while sent < size:
                    n = min(CHUNK, size - sent)
                    writer.write(expected(sent, n))
                    sent += n
                    await writer.drain()
            elif method == "POST" and target == "/echo":
                try:
                    length = int(headers.get("content-length", ""))
                except ValueError:
                    await _send_error(writer, "411 Length Required")
                    return
                if not 0 <= length <= MAX_BODY:
                    await _send_error(writer, "413 Content Too Large")
                    return
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                writer.write(_response_head("200 OK", length))
                left = length
                while left:
                    chunk = await reader.read(min(CHUNK, left))
                    if not chunk:
                        return
                    writer.write(chunk)
                    left -= len(chunk)
                    await writer.drain()
            else:
                await _send_error(writer, "404 Not Found")
            if headers.get("connection", "").lower() == "close":
                return
    finally:
        writer.close()
