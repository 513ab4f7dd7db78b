"""The control socket: tell a running stack to switch mode or report its counters.

``anp up`` (and ``anp echo-server``) serve a Unix stream socket at ``/run/anp/<TAP>.sock``;
``anp ctl`` talks to it. The socket lives in the filesystem, so it is reachable from every
network namespace: it is keyed by the TAP name only.

The protocol is JSON lines: one request object per line, one response object per line.

=====================================================  ==========================================
request                                                response (``ok`` true)
=====================================================  ==========================================
``{"cmd": "info"}``                                    ``info``: pid, tap, netns, ip, mac, mode ...
``{"cmd": "mode"}``                                    ``mode``: name, ``params``: {...}
``{"cmd": "set_mode", "mode": M, "params": {...}}``    ``mode``, ``params`` after the switch
``{"cmd": "coalesce", "params": {...}}``               same; ethtool -C: unset params are kept
``{"cmd": "stats"}``                                   ``stats``: ``stack.stats()``
``{"cmd": "trace", "count": N, "filter": EXPR}``       a stream of records (obs/trace_stream.py; trace_stream() reads it)
=====================================================  ==========================================

A failed request answers ``{"ok": false, "error": "one sentence"}``; the connection stays
open. Request handling (:func:`handle_request`) is a plain function of a stack-like object,
so it is tested without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Protocol

log = logging.getLogger("anp_async.control")

RUN_DIR = "/run/anp"

#: Longest request line accepted (a request is a few dozen bytes; this bounds a bad client).
MAX_LINE = 64 * 1024

#: Mode parameters a request may carry (the receive modes validate the values).
MODE_PARAMS = frozenset({"rx_frames", "rx_usecs", "budget", "weight", "busy_poll_usecs"})


class NoStackError(ConnectionError):
    """No stack answers on the control socket for this TAP."""


class ControlledStack(Protocol):
    """What the control socket needs from a stack (``anp_async.Stack`` provides it)."""

    @property
    def ip(self) -> str: ...

    @property
    def mac(self) -> str: ...

    @property
    def mode_name(self) -> str: ...

    @property
    def mode_params(self) -> Mapping[str, Any]: ...

    def set_mode(self, name: str, **params: Any) -> None: ...

    def stats(self) -> dict[str, Any]: ...


def socket_path(tap: str, run_dir: str = RUN_DIR) -> str:
    """Where the control socket of the stack on ``tap`` lives."""
    if not tap or "/" in tap or tap in (".", ".."):
        raise ValueError(f"{tap!r} is not a valid TAP name")
    return os.path.join(run_dir, f"{tap}.sock")


def _mode_reply(stack: ControlledStack) -> dict[str, Any]:
    return {"ok": True, "mode": stack.mode_name, "params": dict(stack.mode_params)}


def _params_from(req: Mapping[str, Any]) -> dict[str, int]:
    params = req.get("params") or {}
    if not isinstance(params, dict):
        raise ValueError("'params' must be an object")
    unknown = sorted(set(params) - MODE_PARAMS)
    if unknown:
        raise ValueError(f"unknown mode parameter(s): {', '.join(unknown)}")
    for k, v in params.items():
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"mode parameter {k} must be an integer, not {v!r}")
    return dict(params)


def handle_request(
    stack: ControlledStack, req: Any, info: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Answer one decoded control request; never raises for a bad request.

    ``info`` is merged into the answer of ``{"cmd": "info"}`` (the server adds the TAP name,
    namespace, pid and socket path).
    """
    if not isinstance(req, dict):
        return {"ok": False, "error": "a request must be a JSON object"}
    cmd = req.get("cmd")
    try:
        if cmd == "info":
            out: dict[str, Any] = {
                "pid": os.getpid(),
                "ip": stack.ip,
                "mac": stack.mac,
                "mode": stack.mode_name,
                "params": dict(stack.mode_params),
            }
            out.update(info or {})
            return {"ok": True, "info": out}
        if cmd == "mode":
            return _mode_reply(stack)
        if cmd == "set_mode":
            name = req.get("mode")
            if not isinstance(name, str):
                raise ValueError("'mode' must be a mode name")
            stack.set_mode(name, **_params_from(req))
            log.info("mode %s %s", stack.mode_name, dict(stack.mode_params))
            return _mode_reply(stack)
        if cmd == "coalesce":
            # ethtool -C semantics: parameters not given keep their current values.
            params = _params_from(req)
            if stack.mode_name == "coalesce":
                params = {**dict(stack.mode_params), **params}
            stack.set_mode("coalesce", **params)
            log.info("coalesce %s", dict(stack.mode_params))
            return _mode_reply(stack)
        if cmd == "stats":
            return {"ok": True, "stats": stack.stats()}
    except (ValueError, TypeError) as e:
        log.info("refused %r: %s", cmd, e)
        return {"ok": False, "error": str(e)}
    return {"ok": False, "error": f"unknown command {cmd!r}"}


def encode(obj: Any) -> bytes:
    """One JSON line of the control protocol."""
    # default=str: a counter dict holding something exotic must still produce an answer.
    return json.dumps(obj, default=str, separators=(",", ":")).encode() + b"\n"


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def serving(path: str, timeout: float = 1.0) -> bool:
    """Does some process accept connections on the Unix socket ``path``?"""
    if not _is_socket(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError:
            return False
        return True


class ControlServer:
    """Serves :func:`handle_request` for ``stack`` on a Unix socket at ``path``.

    ``start`` creates the directory, refuses to take over a socket another live process
    serves (:class:`FileExistsError`), and replaces a stale one. ``close`` removes the
    socket file if it is still ours. Use as ``async with ControlServer(...)``.
    """

    def __init__(
        self, stack: ControlledStack, path: str, info: Mapping[str, Any] | None = None
    ) -> None:
        self.stack = stack
        self.path = path
        self.info = {"socket": path, **(info or {})}
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        if _is_socket(self.path):
            if serving(self.path):
                raise FileExistsError(f"a stack already serves the control socket {self.path}")
            os.unlink(self.path)  # left behind by a process that was killed
        self._server = await asyncio.start_unix_server(self._client, self.path, limit=MAX_LINE)
        st = os.lstat(self.path)
        self._inode = (st.st_dev, st.st_ino)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._clients):
                t.cancel()
            if self._clients:
                await asyncio.gather(*self._clients, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        # Only remove the file if it is still the socket we created.
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if self._inode == (st.st_dev, st.st_ino):
                os.unlink(self.path)
        self._inode = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            async for req in read_requests(reader, writer):
                if isinstance(req, dict) and req.get("cmd") == "trace":
                    # A stream, not one answer: anp trace (obs/trace_stream.py).
                    from .obs.trace_stream import serve_trace

                    await serve_trace(self.stack, req, reader, writer)
                    break
                writer.write(encode(handle_request(self.stack, req, self.info)))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def read_requests(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> AsyncIterator[Any]:
    """The requests of one control connection, one JSON value per line. A line that is not
    JSON is answered with an error and skipped; one longer than MAX_LINE ends the
    connection (it cannot be resynchronised)."""
    while True:
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            writer.write(encode({"ok": False, "error": "request line too long"}))
            return
        if not line:
            return
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except ValueError:
            writer.write(encode({"ok": False, "error": "request is not valid JSON"}))
            continue
        yield req


def _connect(path: str, timeout: float) -> socket.socket:
    """A connected client socket to the control socket at ``path`` (NoStackError if none)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        s.close()
        raise NoStackError(f"no stack runs there (no control socket at {path})") from e
    except BaseException:
        s.close()
        raise
    return s


def call(path: str, request: Mapping[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the control socket at ``path`` and return the decoded answer.

    Blocking (the ``anp ctl`` side has no event loop). Raises :class:`NoStackError` when
    nothing serves ``path``, TimeoutError when the stack does not answer in time.
    """
    with _connect(path, timeout) as s:
        s.sendall(encode(request))
        buf = bytearray()
        while b"\n" not in buf:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"the stack did not answer on {path} in {timeout} s") from None
            if not chunk:
                raise NoStackError(f"the stack closed {path} without answering")
            buf += chunk
            if len(buf) > 64 * 1024 * 1024:
                raise ValueError("control answer too long")
        line = bytes(buf).split(b"\n", 1)[0]
    return json.loads(line)


def trace_stream(path: str, count: int | None = None, filter: str | None = None,
                 timeout: float = 5.0) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Ask the stack at control socket ``path`` to trace (``anp trace``); yield its records
    as they come (blocking; the stack's side is :mod:`anp_async.obs.trace_stream`).
    Raises NoStackError as :func:`call` does, ValueError with the stack's sentence if it
    refuses."""
    with _connect(path, timeout) as s:
        req: dict[str, Any] = {"cmd": "trace"}
        if count is not None:
            req["count"] = count
        if filter:
            req["filter"] = filter
        s.sendall(encode(req))
        s.settimeout(None)  # a quiet stack may send nothing for a long time
        with s.makefile("rb") as f:
            first = json.loads(f.readline() or b"{}")
            if not first.get("ok"):
                raise ValueError(first.get("error", "the stack closed the connection"))
            for raw in f:
                msg = json.loads(raw)
                if "trace" in msg:
                    yield msg["trace"]
                elif msg.get("end"):
                    return
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
