"""A TCP echo server on the stack; the Linux kernel connects to it as the client.

    sudo .venv/bin/python examples/echo_server.py

The server is plain asyncio streams code (``start_server`` with a handler), only the
``stack.`` in front says where its sockets live. The kernel side is Python's own blocking
socket module in the lab's namespace.
"""

from __future__ import annotations

import asyncio
import socket

from _lab import STACK_IP, in_ns, lab


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    print(f"server: {peer[0]}:{peer[1]} closed")
    writer.close()


def kernel_client(message: bytes) -> bytes:
    with socket.create_connection((STACK_IP, 7), timeout=5) as s:
        s.sendall(message)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got


async def main() -> None:
    async with lab() as (stack, ns):
        server = await stack.start_server(handle, STACK_IP, 7)
        print(f"server: listening on {STACK_IP}:7")
        message = b"hello from the kernel " * 5000  # 110 kB: many segments each way
        got = await in_ns(ns, kernel_client, message)
        print(
            f"client (kernel): sent {len(message)} bytes, got {len(got)} back, "
            f"{'identical' if got == message else 'DIFFERENT'}"
        )
        server.close()
        assert got == message


if __name__ == "__main__":
    asyncio.run(main())
