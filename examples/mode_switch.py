"""Switch the receive mode while the kernel pings the stack 1000 times a second and a TCP
connection streams data: nothing is lost, and each mode's counters show its cost.

    sudo .venv/bin/python examples/mode_switch.py

``stack.set_mode`` is what ``anp ctl --tap T mode poll`` does to a running ``anp up``.
"""

from __future__ import annotations

import asyncio
import socket
import threading

from _lab import KERNEL_IP, STACK_IP, lab

MODES = [
    ("interrupt", {}),
    ("coalesce", {"rx_frames": 16, "rx_usecs": 100}),
    ("poll", {"budget": 32}),
    ("adaptive", {"weight": 64}),
]


def kernel_sink(srv: socket.socket, got: list[int]) -> None:
    conn, _ = srv.accept()
    with conn:
        while data := conn.recv(1 << 16):
            got[0] += len(data)


async def main() -> None:
    async with lab() as (stack, ns):
        with ns.enter():
            srv = socket.create_server((KERNEL_IP, 9000))
        got = [0]
        t = threading.Thread(target=kernel_sink, args=(srv, got), daemon=True)
        t.start()
        # 1000 requests a second (an interval below 0.2 s needs root); -c and -w bound it.
        ping = ns.popen(
            ["ping", "-i", "0.001", "-c", "2000", "-w", "10", "-q", STACK_IP],
            stdout=asyncio.subprocess.PIPE,
            text=True,
        )
        reader, writer = await stack.open_connection(KERNEL_IP, 9000)
        sent = 0
        print(f"{'mode':<36} {'wake-ups':>9} {'frames':>8} {'batches':>8} {'fr/batch':>8}")
        for name, params in MODES:
            stack.set_mode(name, **params)
            for _ in range(50):  # about half a second per mode
                writer.write(b"d" * 16384)
                sent += 16384
                await writer.drain()
                await asyncio.sleep(0.01)
            m = stack.stats()["mode"]
            label = name + (
                "(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")" if params else ""
            )
            fpb = m["frames"] / m["batches"] if m["batches"] else 0
            print(f"{label:<36} {m['wakeups']:>9} {m['frames']:>8} {m['batches']:>8} {fpb:>8.1f}")
        writer.close()
        await writer.wait_closed()
        await asyncio.to_thread(t.join, 10)
        srv.close()
        out, _ = await asyncio.to_thread(ping.communicate, timeout=15)
        summary = [x for x in out.splitlines() if "packets transmitted" in x]
        print(f"kernel ping -i 0.001: {summary[0] if summary else out.strip()}")
        print(f"TCP: stack sent {sent} bytes, kernel received {got[0]}")
        assert got[0] == sent


if __name__ == "__main__":
    asyncio.run(main())
