"""The benchmark's sandbox and child processes: namespaces, peers, line-oriented JSON I/O.

:class:`BenchEnv` creates everything a run needs and removes it on exit (also on an error
or Ctrl-C): two namespaces, ``K`` (the kernel peer: the TAP's kernel end 10.0.0.1/24 and
the veth end 10.0.1.2/24) and ``C`` (the baseline's other end: veth 10.0.1.1/24), and every
child process, which is killed on exit.

    root ns:  stack_peer --net stack (TAP fd only; the TAP itself lives in K)
    K:        TAP kernel end 10.0.0.1  |  veth-k 10.0.1.2   kernel_peer serve, clients
    C:        veth-c 10.0.1.1          asyncio peer (stack_peer --net kernel), clients
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from anp_async.nic.netns import Netns, disable_ipv6, loopback_up, unique_name, veth_pair

from .apps import BenchError
from .common import CPU_GROUPS, PLACEMENTS, WARM_MARK

#: The stack's TAP is ``anpb`` + 6 hex digits, new per run: the TAP lives in the run's own
#: namespace, but ``anp run --tap T`` (the preload benchmark) names its control socket
#: after it (``/run/anp/T.sock``), which two overlapping runs would share.
TAP_PREFIX = "anpb"
TAP_KERNEL_IP = "10.0.0.1"
STACK_IP = "10.0.0.2"
VETH_K_IP = "10.0.1.2"
VETH_C_IP = "10.0.1.1"
#: The same places with ``--family 6``.
TAP_KERNEL_IP6 = "fd00::1"
STACK_IP6 = "fd00::2"
VETH_K_IP6 = "fd00:1::2"
VETH_C_IP6 = "fd00:1::1"
REPO = Path(__file__).resolve().parents[2]


def python() -> str:
    """The interpreter the peers run on (the harness's own, i.e. the venv's)."""
    return sys.executable


def peer_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Peer:
    """A child process speaking one JSON object per stdout line (and reading commands on
    stdin). Reads take a timeout; a process that dies or times out raises BenchError."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.stderr.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=peer_env(),
            cwd=str(REPO),
        )
        self._buf = b""
        #: The ready event it printed (peers started by :meth:`BenchEnv._start`).
        self.ready: dict[str, Any] = {}
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").strip().splitlines()
            return "\n".join(text[-15:])
        return ""

    def read_line(self, timeout: float) -> str:
        """The next stdout line (without newline); BenchError on timeout or exit."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no answer within {timeout:.0f} s")
            if not self._sel.select(left):
                continue
            assert self.proc.stdout is not None
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                self.proc.wait(timeout=5)
                raise BenchError(
                    f"{self.name} exited (status {self.proc.returncode}):\n{self._stderr_tail()}"
                )
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def read_event(self, timeout: float) -> dict[str, Any]:
        """The next JSON line; a ``{"event": "error"}`` line raises BenchError."""
        line = self.read_line(timeout)
        if line == WARM_MARK:
            return {"event": "warm"}
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            raise BenchError(f"{self.name}: unexpected output {line[:200]!r}") from None
        if ev.get("event") == "error":
            tb = ev.get("traceback", "")
            raise BenchError(f"{self.name}: {ev.get('message')}" + (f"\n{tb}" if tb else ""))
        return ev

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"{self.name} is gone:\n{self._stderr_tail()}") from None

    def request(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(cmd)
        return self.read_event(timeout)

    def stop(self, grace: float = 3.0) -> None:
        """Close stdin (the polite quit), then SIGTERM, then SIGKILL."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin:
                self.proc.stdin.close()
            if self.proc.stdout:
                self._sel.close()
                self.proc.stdout.close()
        self._log.close()


def pin(pid: int, cpu: int) -> None:
    """Put every thread of process ``pid`` on ``cpu`` (threads it creates later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), {cpu})


class BenchEnv:
    """Namespaces, veth, peers; everything removed on :meth:`close` (context manager)."""

    def __init__(
        self, log_dir: Path, loop: str = "asyncio", family: int = 4, queues: int = 1,
        placement: str = "free",
    ) -> None:  # fmt: skip
        self.log_dir = log_dir
        #: The stack's TAP (in namespace K), unique per run.
        self.tap = TAP_PREFIX + secrets.token_hex(3)
        #: One of :data:`PLACEMENTS` (see :meth:`place`).
        self.placement = placement
        self.loop = loop
        #: Stack workers (queues of the TAP): >1 makes the stack peer a multi-queue host.
        self.queues = queues
        #: 4, or 6: the peers talk IPv6 (the stack is dual-stack, the kernel ends get
        #: IPv6 addresses) and :meth:`addr` gives the IPv6 addresses.
        self.family = family
        self.peers: list[Peer] = []
        self.ns_k: Netns | None = None
        self.ns_c: Netns | None = None
        self._kernel_server: Peer | None = None

    def __enter__(self) -> BenchEnv:
        try:
            self.ns_k = Netns.create(unique_name("anp-bk"))
            self.ns_c = Netns.create(unique_name("anp-bc"))
            for ns in (self.ns_k, self.ns_c):
                loopback_up(ns)
                disable_ipv6(ns, "all")
                disable_ipv6(ns, "default")
            veth_pair(
                self.ns_c, self.ns_k, f"{VETH_C_IP}/24", f"{VETH_K_IP}/24", "veth-c", "veth-k"
            )
            if self.family == 6:
                for ns, dev, ip in (
                    (self.ns_c, "veth-c", VETH_C_IP6),
                    (self.ns_k, "veth-k", VETH_K_IP6),
                ):
                    ns.run(
                        ["sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=0"], check=True
                    )
                    ns.run(["ip", "-6", "addr", "add", f"{ip}/64", "dev", dev, "nodad"], check=True)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for p in reversed(self.peers):
            with contextlib.suppress(Exception):
                p.stop()
        self.peers.clear()
        for ns in (self.ns_c, self.ns_k):
            if ns is not None:
                with contextlib.suppress(Exception):
                    ns.delete()

    def _start(self, name: str, argv: list[str], ready_timeout: float = 30.0) -> Peer:
        p = Peer(name, argv, self.log_dir)
        self.peers.append(p)
        try:
            p.ready = p.read_event(ready_timeout)
        except BaseException:
            self.stop(p)
            raise
        return p

    def place(self, subject: int, peer: int) -> dict[str, list[int]]:
        """Pin the process under test and its peer as :attr:`placement` says; the CPUs
        each may run on afterwards (``subject_cpus``, ``peer_cpus``)."""
        cpu_subject, cpu_peer = PLACEMENTS[self.placement]
        if cpu_subject is not None and cpu_peer is not None:
            pin(subject, cpu_subject)
            pin(peer, cpu_peer)
        return {
            "subject_cpus": sorted(os.sched_getaffinity(subject)),
            "peer_cpus": sorted(os.sched_getaffinity(peer)),
        }

    def stop(self, p: Peer) -> None:
        CPU_GROUPS.pop(p.pid, None)
        p.stop()
        with contextlib.suppress(ValueError):
            self.peers.remove(p)

    def in_ns(self, ns: Netns, module: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", ns.name, python(), "-m", module, *args]

    def kernel_server(self) -> Peer:
        """The kernel echo/sink servers in K (one for the whole run)."""
        if self._kernel_server is None:
            assert self.ns_k is not None
            args = ("serve", "--host", "::") if self.family == 6 else ("serve",)
            self._kernel_server = self._start(
                "kernel_server", self.in_ns(self.ns_k, "anp_async.bench.kernel_peer", *args)
            )
        return self._kernel_server

    def addr(self, where: str) -> str:
        """The address of ``where`` (``stack``, ``tap-kernel``, ``veth-k``, ``veth-c``,
        ``any``) in the run's family."""
        v6 = self.family == 6
        return {
            "stack": STACK_IP6 if v6 else STACK_IP,
            "tap-kernel": TAP_KERNEL_IP6 if v6 else TAP_KERNEL_IP,
            "veth-k": VETH_K_IP6 if v6 else VETH_K_IP,
            "veth-c": VETH_C_IP6 if v6 else VETH_C_IP,
            "any": "::" if v6 else "0.0.0.0",
        }[where]

    def stack_peer(self, mode: str, params: dict[str, int] | None = None) -> Peer:
        """The stack in ``mode`` on the TAP (in K), in its own process in the root ns."""
        assert self.ns_k is not None
        argv = [
            python(), "-m", "anp_async.bench.stack_peer", "--net", "stack", "--tap", self.tap,
            "--netns", self.ns_k.name, "--ip", f"{STACK_IP}/24",
            "--peer", f"{TAP_KERNEL_IP}/24", "--mode", mode,
            "--mode-params", json.dumps(params or {}), "--loop", self.loop,
        ]  # fmt: skip
        if self.family == 6:
            argv += ["--ip6", f"{STACK_IP6}/64", "--peer6", f"{TAP_KERNEL_IP6}/64"]
        if self.queues > 1:
            argv += ["--queues", str(self.queues)]
        p = self._start(f"stack_{mode}", argv, ready_timeout=60.0 if self.queues > 1 else 30.0)
        if p.ready.get("pids"):  # a multi-queue host: its CPU is its workers'
            CPU_GROUPS[p.pid] = [int(x) for x in p.ready["pids"] if x is not None]
        return p

    def asyncio_peer(self) -> Peer:
        """The same asyncio apps on kernel sockets, in C (10.0.1.1)."""
        assert self.ns_c is not None
        argv = self.in_ns(
            self.ns_c, "anp_async.bench.stack_peer", "--net", "kernel",
            "--ip", f"{self.addr('veth-c')}/{64 if self.family == 6 else 24}", "--loop", self.loop,
        )  # fmt: skip
        return self._start("asyncio", argv)

    def kernel_job(self, ns: Netns, name: str, *args: str) -> Peer:
        """A one-shot ``anp_async.bench.kernel_peer`` command (client, bulk-send, blast) inside ``ns``."""
        p = Peer(name, self.in_ns(ns, "anp_async.bench.kernel_peer", *args), self.log_dir)
        self.peers.append(p)
        return p

    def tap_counter(self, name: str) -> int:
        """A statistics counter of the TAP's kernel end (e.g. ``tx_dropped``); -1 if gone."""
        assert self.ns_k is not None
        res = self.ns_k.run(["cat", f"/sys/class/net/{self.tap}/statistics/{name}"])
        try:
            return int(res.stdout.strip())
        except ValueError:
            return -1
