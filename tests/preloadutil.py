"""Running programs through ``anp run`` in tests (importable: ``tests.preloadutil``).

Programs on the stack run with ``anp run ... --isolate -- PROGRAM``: in an empty network
namespace of their own, so a socket call the LD_PRELOAD library misses fails instead of
reaching the kernel. Clients on the stack run inside a namespace the test made first
(:func:`run_on_stack`: ``ip netns exec NS anp run``, the TAP is created there); servers get
their namespace from ``anp run --netns`` (:func:`stack_server`); :func:`anp_up` runs a
stack that programs join with ``--attach`` (:func:`attached`). Every TAP has a name of its
own, so its control sockets in /run/anp never meet another test's.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

from anp_async.nic.netns import Netns, unique_name

ANP = os.path.join(os.path.dirname(sys.executable), "anp")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACK_IP, KERNEL_IP = "10.0.0.2", "10.0.0.1"
MiB = 1024 * 1024


def new_tap() -> str:
    """A TAP name of our own: its control socket (/run/anp/TAP.sock) is shared by all."""
    return f"anppl{secrets.token_hex(3)}"


def stack_opts(tap: str, mode: str | None = None) -> list[str]:
    """The stack options of ``anp run`` / ``anp up`` (10.0.0.2 on TAP, kernel 10.0.0.1)."""
    opts = ["--tap", tap, "--ip", f"{STACK_IP}/24", "--peer", f"{KERNEL_IP}/24"]
    return opts + (["--mode", mode] if mode else [])


def env() -> dict[str, str]:
    """The environment of every program: no proxies, unbuffered Python, C watchdog 60 s."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=ROOT, ANPC_TIMEOUT="60")
    return env


class Proc:
    """A background process; stdout and stderr go to files we can wait on."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.out = tempfile.NamedTemporaryFile("w+b", prefix="anp-pl-out-")
        self.err = tempfile.NamedTemporaryFile("w+b", prefix="anp-pl-err-")
        self.p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err, env=env(),
            cwd=ROOT,
        )  # fmt: skip

    def stdout(self) -> bytes:
        with open(self.out.name, "rb") as f:
            return f.read()

    def text(self) -> str:
        with open(self.err.name, "rb") as f:
            err = f.read()
        return (self.stdout() + b"\n--- stderr ---\n" + err).decode(errors="replace")

    def wait_for(self, marker: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.text():
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{marker!r} did not appear in {self.argv}; output:\n{self.text()}")

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.argv} did not end; output:\n{self.text()}") from None

    def close(self) -> None:
        """SIGTERM (anp removes its namespace and control sockets), then SIGKILL."""
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.out.close()
        self.err.close()


def describe(r: subprocess.CompletedProcess[str]) -> str:
    """Status and output of a finished command, for assertion messages."""
    return f"status {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"


@contextlib.contextmanager
def kernel_proc(ns: Netns, argv: list[str], ready: str | None = "listening") -> Iterator[Proc]:
    """A kernel-side program inside ``ns``, waited on until it prints ``ready``."""
    proc = Proc(["ip", "netns", "exec", ns.name, *argv])
    try:
        if ready:
            proc.wait_for(ready)
        yield proc
    finally:
        proc.close()


def run_on_stack(
    ns: Netns, program: list[str], mode: str | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``anp run --isolate -- program`` with the stack's TAP in ``ns``, to completion."""
    argv = [ANP, "run", *stack_opts(new_tap(), mode), "--isolate", "--", *program]
    return ns.run(argv, timeout=timeout, env=env(), cwd=ROOT)


@contextlib.contextmanager
def stack_server(
    program: list[str], ready: str | None, mode: str | None = None
) -> Iterator[tuple[Netns, Proc]]:
    """``anp run --netns NEW --isolate -- program`` (a server), waited on until ``ready``."""
    ns = Netns(unique_name("anp-pl"))
    argv = [ANP, "run", "--netns", ns.name, *stack_opts(new_tap(), mode), "--isolate", "--",
            *program]  # fmt: skip
    proc = Proc(argv)
    try:
        if ready:
            proc.wait_for(ready)
        else:  # no marker: wait for the namespace (the stack comes up before the program)
            deadline = time.monotonic() + 30
            while not ns.exists() and time.monotonic() < deadline and proc.p.poll() is None:
                time.sleep(0.05)
        yield ns, proc
    finally:
        proc.close()
        if ns.exists():
            ns.delete()


def retry_in_ns(
    ns: Netns, argv: list[str], seconds: float = 30.0, **kw
) -> subprocess.CompletedProcess:
    """Run a kernel-side client until it succeeds (the stack's listener may not be up yet)."""
    deadline = time.monotonic() + seconds
    while True:
        r = ns.run(argv, timeout=60, **kw)
        if r.returncode == 0 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


@contextlib.contextmanager
def anp_up(extra: Sequence[str] = ()) -> Iterator[tuple[Netns, str, Proc]]:
    """``anp up --netns NEW [extra options]`` on a TAP of our own: (namespace, tap, process)."""
    ns, tap = Netns(unique_name("anp-plup")), new_tap()
    proc = Proc([ANP, "up", "--netns", ns.name, *stack_opts(tap), *extra])
    try:
        proc.wait_for("anp up: tap")
        yield ns, tap, proc
    finally:
        if proc.p.poll() is None:
            proc.p.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.p.wait(20)
        proc.close()
        if ns.exists():
            ns.delete()


def attached(tap: str, program: list[str]) -> Proc:
    """``anp run --attach --tap TAP --isolate -- program`` in the background."""
    return Proc([ANP, "run", "--attach", "--tap", tap, "--isolate", "--", *program])


def tcp_stats(tap: str) -> dict:
    """``anp stats --tap TAP --json``'s TCP part."""
    r = subprocess.run([ANP, "stats", "--tap", tap, "--json"], capture_output=True, text=True,
                       timeout=20, env=env())  # fmt: skip
    assert r.returncode == 0, describe(r)
    return json.loads(r.stdout)["tcp"]
