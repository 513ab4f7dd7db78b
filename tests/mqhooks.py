"""Code the multi-queue tests run inside each stack worker (``HostConfig.setup``)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

_tasks: set[asyncio.Task[None]] = set()


async def open_connections(stack: Any, index: int) -> None:
    """Open ANP_MQ_CONNS connections from this worker to the kernel's echo server at
    10.0.0.1:ANP_MQ_PORT, echo one line on each, and write the outcome (local ports,
    echoes right) to ANP_MQ_OUT/w<index>.json."""
    port = int(os.environ["ANP_MQ_PORT"])
    count = int(os.environ.get("ANP_MQ_CONNS", "6"))
    out = os.path.join(os.environ["ANP_MQ_OUT"], f"w{index}.json")

    async def run() -> None:
        results: list[dict[str, Any]] = []
        try:
            for k in range(count):
                r, w = await asyncio.wait_for(stack.open_connection("10.0.0.1", port), 5)
                msg = f"w{index}-{k}\n".encode()
                w.write(msg)
                echo = await asyncio.wait_for(r.readexactly(len(msg)), 5)
                results.append({"port": w.get_extra_info("sockname")[1], "ok": echo == msg})
                w.close()
            rtt = await stack.ping("10.0.0.1", timeout=2.0)
            doc: dict[str, Any] = {"results": results, "ping": rtt}
        except Exception as e:  # reported to the test, which fails with it
            doc = {"results": results, "error": repr(e)}
        with open(out + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(out + ".tmp", out)

    task = asyncio.ensure_future(run())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, int]] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((data, addr[1]))


async def udp_exchange(stack: Any, index: int) -> None:
    """From this worker, UDP to the kernel's echo servers at 10.0.0.1 on the ports in
    ANP_MQ_UDP_PORTS: one connected endpoint to the first port, one unconnected endpoint
    sending to every port (both on ephemeral ports the worker chooses). Writes the local
    ports and the echoes that came back to ANP_MQ_OUT/w<index>-udp.json."""
    ports = [int(p) for p in os.environ["ANP_MQ_UDP_PORTS"].split(",")]
    out = os.path.join(os.environ["ANP_MQ_OUT"], f"w{index}-udp.json")

    async def run() -> None:
        try:
            c_tr, c_pr = await stack.create_datagram_endpoint(
                _Collect, remote_addr=("10.0.0.1", ports[0])
            )
            u_tr, u_pr = await stack.create_datagram_endpoint(_Collect, local_addr=(stack.ip, 0))
            for _ in range(3):  # a few tries: the first may wait for ARP
                c_tr.sendto(b"c%d" % index)
                for p in ports:
                    u_tr.sendto(b"u%d-%d" % (index, p), ("10.0.0.1", p))
                await asyncio.sleep(0.3)
                if c_pr.got and len({rp for _, rp in u_pr.got}) == len(ports):
                    break
            doc = {
                "connected": {"port": c_tr.get_extra_info("sockname")[1],
                              "got": [d.decode() for d, _ in c_pr.got]},
                "unconnected": {"port": u_tr.get_extra_info("sockname")[1],
                                "from": sorted({rp for _, rp in u_pr.got}),
                                "got": sorted({d.decode() for d, _ in u_pr.got})},
            }  # fmt: skip
        except Exception as e:
            doc = {"error": repr(e)}
        with open(out + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(out + ".tmp", out)

    task = asyncio.ensure_future(run())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
