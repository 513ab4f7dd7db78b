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
