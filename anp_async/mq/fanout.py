"""The control socket of a multi-queue host: one socket that answers for every worker.

Each worker serves the ordinary control protocol (:mod:`anp_async.control`) on its own
socket (``TAP.w0.sock``, ``TAP.w1.sock`` ...). The host's socket (``TAP.sock``, where
``anp ctl``, ``anp stats``, ``anp ss``, ``anp top`` and ``anp trace`` look) speaks the same
protocol and fans out:

=====================================  ==================================================
request                                answer
=====================================  ==================================================
any request with ``"worker": i``       worker ``i``'s own answer (a stream for ``trace``)
``info``                               the host (pid, tap, queues, mac ...) plus
                                       ``workers``: index, pid, alive, socket, restarts,
                                       and ``deaths``
``mode``                               worker 0's mode (every worker runs the same)
``set_mode`` / ``coalesce``            sent to every worker; the first refusal is the
                                       answer, else worker 0's new mode
``stats``                              the workers' stats merged (counters summed, lists
                                       concatenated with ``"worker": i`` in each item, so
                                       ``anp ss`` lists every worker's sockets), and
                                       ``workers``: each worker's own stats; ``mq``: queues,
                                       alive workers, deaths
``trace``                              every worker's records, each with ``"worker": i``
=====================================  ==================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

from ..control import MAX_LINE, encode, read_requests, serving

if TYPE_CHECKING:
    from .host import MultiQueueHost

#: Seconds a worker may take to answer one request.
WORKER_TIMEOUT = 5.0


def merge_stats(per_worker: list[tuple[int, Any]]) -> Any:
    """Merge the workers' ``stats()``: numbers summed, equal strings kept, lists joined
    (dict items tagged with ``worker``), mode parameters taken from the first worker."""
    return _merge(per_worker, ())


def _merge(vals: list[tuple[int, Any]], path: tuple[str, ...]) -> Any:
    present = [(i, v) for i, v in vals if v is not None]
    if not present:
        return None
    first = present[0][1]
    if "params" in path:
        return first
    if isinstance(first, dict):
        keys = dict.fromkeys(k for _, v in present if isinstance(v, dict) for k in v)
        return {
            k: _merge([(i, v.get(k)) for i, v in present if isinstance(v, dict)], (*path, k))
            for k in keys
        }
    if isinstance(first, list):
        out: list[Any] = []
        for i, v in present:
            if isinstance(v, list):
                out.extend({**x, "worker": i} if isinstance(x, dict) else x for x in v)
        return out
    if isinstance(first, bool):
        return any(bool(v) for _, v in present)
    if isinstance(first, int | float):
        return sum(v for _, v in present if isinstance(v, int | float) and not isinstance(v, bool))
    distinct = list(dict.fromkeys(str(v) for _, v in present))
    return first if len(distinct) == 1 else ",".join(distinct)


class FanoutControl:
    """Serves the host's control socket at ``path`` for ``host``'s workers."""

    def __init__(self, host: MultiQueueHost, path: str) -> None:
        self.host = host
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        if os.path.exists(self.path):
            if serving(self.path):
                raise FileExistsError(f"a stack already serves the control socket {self.path}")
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._client, self.path, limit=MAX_LINE)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._clients):
                t.cancel()
            if self._clients:
                await asyncio.gather(*self._clients, return_exceptions=True)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # -- talking to workers ------------------------------------------------------------

    def _worker_paths(self) -> list[tuple[int, str]]:
        """(index, control socket) of every live worker."""
        return [
            (w.spec.index, w.spec.control)
            for w in self.host.workers
            if w.alive and w.spec.control is not None
        ]

    async def _ask(self, path: str, req: dict[str, Any]) -> dict[str, Any]:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=64 * 1024 * 1024), WORKER_TIMEOUT
            )
        except (OSError, TimeoutError) as e:
            return {"ok": False, "error": f"worker control socket {path}: {e}"}
        try:
            writer.write(encode(req))
            line = await asyncio.wait_for(reader.readline(), WORKER_TIMEOUT)
            if not line:
                return {"ok": False, "error": f"worker at {path} closed without answering"}
            return dict(json.loads(line))
        except (OSError, TimeoutError, ValueError) as e:
            return {"ok": False, "error": f"worker at {path}: {e!r}"}
        finally:
            writer.close()

    async def _ask_all(self, req: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
        paths = self._worker_paths()
        answers = await asyncio.gather(*(self._ask(p, req) for _, p in paths))
        return [(i, a) for (i, _), a in zip(paths, answers, strict=True)]

    # -- requests ---------------------------------------------------------------------

    async def handle(self, req: Any) -> dict[str, Any]:
        """Answer one request that is not a stream."""
        if not isinstance(req, dict):
            return {"ok": False, "error": "a request must be a JSON object"}
        if "worker" in req:
            return await self._one_worker(req)
        cmd = req.get("cmd")
        answers = await self._ask_all(req)
        if not answers:
            return {"ok": False, "error": "no worker is running"}
        if cmd == "info":
            return {"ok": True, "info": self._info(answers)}
        if cmd == "stats":
            bad = [a for _, a in answers if not a.get("ok")]
            if bad:
                return bad[0]
            per = [(i, a["stats"]) for i, a in answers]
            merged = merge_stats(per)
            merged["workers"] = {str(i): s for i, s in per}
            merged["mq"] = self._mq()
            return {"ok": True, "stats": merged}
        # mode, set_mode, coalesce and anything else: the first refusal, else worker 0.
        for _, a in answers:
            if not a.get("ok"):
                return a
        return answers[0][1]

    def _mq(self) -> dict[str, Any]:
        host = self.host
        return {
            "queues": host.config.queues,
            "alive": sum(1 for w in host.workers if w.alive),
            "deaths": [d.describe() for d in host.deaths],
        }

    def _info(self, answers: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        host = self.host
        first: dict[str, Any] = next((a["info"] for _, a in answers if a.get("ok")), {})
        info = {k: v for k, v in first.items() if k not in ("pid", "socket", "worker")}
        info.update(
            pid=os.getpid(),
            socket=self.path,
            queues=host.config.queues,
            workers=[
                {
                    "index": w.spec.index,
                    "pid": w.pid if w.alive else None,
                    "alive": w.alive,
                    "socket": w.spec.control,
                    "restarts": len(w.restarts),
                }
                for w in host.workers
            ],
            deaths=[d.describe() for d in host.deaths],
        )
        return info

    async def _one_worker(self, req: dict[str, Any]) -> dict[str, Any]:
        index = req.get("worker")
        paths = dict(self._worker_paths())
        if not isinstance(index, int) or isinstance(index, bool) or index not in paths:
            return {"ok": False, "error": f"no live worker {index!r} (live: {sorted(paths)})"}
        inner = {k: v for k, v in req.items() if k != "worker"}
        return await self._ask(paths[index], inner)

    async def _trace(
        self, req: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Merge the trace streams of the workers asked for (all, or ``worker``)."""
        paths = self._worker_paths()
        if "worker" in req:
            paths = [(i, p) for i, p in paths if i == req["worker"]]
        inner = {k: v for k, v in req.items() if k != "worker"}
        streams = []
        for i, p in paths:
            try:
                r, w = await asyncio.open_unix_connection(p, limit=MAX_LINE * 16)
            except OSError:
                continue
            w.write(encode(inner))
            streams.append((i, r, w))
        if not streams:
            writer.write(encode({"ok": False, "error": "no worker is running"}))
            return
        started = False

        async def pump(i: int, r: asyncio.StreamReader) -> None:
            nonlocal started
            while line := await r.readline():
                rec = json.loads(line)
                if "tracing" in rec:  # each worker's start line: pass on the first one only
                    if started:
                        continue
                    started = True
                elif isinstance(rec, dict):
                    rec["worker"] = i
                    if isinstance(rec.get("trace"), dict):
                        rec["trace"]["worker"] = i
                        rec["trace"]["text"] = f"[w{i}] {rec['trace'].get('text', '')}"
                writer.write(encode(rec))
                await writer.drain()

        pumps: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(pump(i, r)) for i, r, _ in streams
        ]
        gone: asyncio.Future[Any] = asyncio.ensure_future(reader.read(1))
        all_done: asyncio.Future[Any] = asyncio.gather(*pumps, return_exceptions=True)
        try:
            await asyncio.wait([gone, all_done], return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            all_done.cancel()
            for task in pumps:
                task.cancel()
            for _, _, w in streams:
                w.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            async for req in read_requests(reader, writer):
                if isinstance(req, dict) and req.get("cmd") == "trace":
                    await self._trace(req, reader, writer)
                    break
                writer.write(encode(await self.handle(req)))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
