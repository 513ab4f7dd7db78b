"""A TCP client on the stack talking to an echo server on the Linux kernel.

    sudo .venv/bin/python examples/echo_client.py

``stack.open_connection`` is ``asyncio.open_connection``; errors are the ones asyncio
programs catch (here: ConnectionRefusedError from a closed port, answered with a RST).
"""

from __future__ import annotations

import asyncio
import socket
import threading

from _lab import KERNEL_IP, lab


def kernel_echo_server(ready: threading.Event, stop: threading.Event) -> None:
    with socket.create_server((KERNEL_IP, 7000)) as srv:
        srv.settimeout(0.2)
        ready.set()
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)


async def main() -> None:
    async with lab(mode="adaptive") as (stack, ns):
        ready, stop = threading.Event(), threading.Event()

        def serve() -> None:
            with ns.enter():
                kernel_echo_server(ready, stop)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        await asyncio.to_thread(ready.wait, 5)
        reader, writer = await stack.open_connection(KERNEL_IP, 7000)
        for line in (b"one\n", b"two\n", b"three\n"):
            writer.write(line)
            echoed = await reader.readline()
            rtt = await stack.ping(KERNEL_IP)
            print(f"sent {line!r}, echoed {echoed!r}  (ping {rtt * 1e6:.0f} us)")
        writer.close()
        await writer.wait_closed()
        try:
            await stack.open_connection(KERNEL_IP, 7001)
        except ConnectionRefusedError as e:
            print(f"port 7001: {e.strerror} (the kernel answered the SYN with a RST)")
        stop.set()
        await asyncio.to_thread(t.join, 5)


if __name__ == "__main__":
    asyncio.run(main())
