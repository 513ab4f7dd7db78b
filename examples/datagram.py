"""UDP on the stack: a DatagramProtocol exchanging datagrams with the kernel, including
one too big for a frame (sent as IP fragments, reassembled by the kernel and back by the
stack), and an ICMP port unreachable surfacing as ``error_received``.

    sudo .venv/bin/python examples/datagram.py
"""

from __future__ import annotations

import asyncio
import socket
import threading

from _lab import KERNEL_IP, lab


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)


def kernel_udp_echo(sock: socket.socket, n: int) -> None:
    for _ in range(n):
        data, addr = sock.recvfrom(65535)
        sock.sendto(data.upper(), addr)


async def main() -> None:
    async with lab() as (stack, ns):
        with ns.enter():  # a kernel socket inside the lab's namespace
            ksock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ksock.bind((KERNEL_IP, 5000))
        ksock.settimeout(5)
        t = threading.Thread(target=kernel_udp_echo, args=(ksock, 2), daemon=True)
        t.start()
        transport, proto = await stack.create_datagram_endpoint(
            Client, remote_addr=(KERNEL_IP, 5000)
        )
        for msg in (b"small datagram", b"x" * 8000):
            transport.sendto(msg)
            reply = await asyncio.wait_for(proto.replies.get(), 5)
            print(f"sent {len(msg)} bytes, got {len(reply)} back: {reply[:20]!r}...")
        t.join(5)
        ksock.close()
        # Nobody listens on 5000 any more: the kernel answers with ICMP port unreachable.
        transport.sendto(b"anyone there?")
        err = await asyncio.wait_for(proto.errors.get(), 5)
        print(f"to a closed port: error_received({err!r})")
        transport.close()
        ip = stack.stats()["ip"]
        print(
            f"stack IP counters: reassembled {ip.get('reassembled', 0)}, "
            f"fragmented {ip.get('fragmented', 0)}"
        )


if __name__ == "__main__":
    asyncio.run(main())
