"""``anp run --inprocess``: a Python asyncio program inside anp, on a stack event loop.

(Implied by ``--loop uvloop`` and ``--map-host``; other programs go through the preload
library, :mod:`.run`.)::

    anp run [stack options] [--loop asyncio|uvloop] [--map-host FROM=TO] -- python app.py ARGS
    anp run ... -- python -m package.module ARGS
    python -m anp_async run ... -- python3 app.py ARGS

The program runs in this very process (the stack must share the program's event loop): an
event-loop policy whose new loops are stack loops is installed, then the script runs with
``runpy`` exactly as ``python app.py`` would run it -- ``__name__ == "__main__"``,
``sys.argv`` its own, ``sys.path[0]`` its directory. The stack (TAP, namespace with
``--netns``) comes up on the first network call of a loop and goes down when that loop is
closed; anything still up at exit (a loop the program never closed, the namespace) is torn
down before ``anp run`` returns the program's exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import re
import runpy
import signal
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..transport.loop import StackEventLoopPolicy, StackUnavailableError, parse_host_map
from .base import CliError
from .options import _check_stack_args, mode_from_args, open_stack_from_args

if TYPE_CHECKING:
    from ..stack import Stack

_PYTHON_NAME = re.compile(r"python(\d+(\.\d+)*)?")


@dataclass
class Program:
    """What to run: a script path, a module (``-m``) or code (``-c``), and its arguments."""

    kind: str  # "script" | "module" | "code"
    target: str
    args: list[str] = field(default_factory=list)
    unbuffered: bool = False
    interpreter: str | None = None


def parse_program(words: list[str]) -> Program:
    """``[python] [-u] (script | -m module | -c code) args...`` -> :class:`Program`."""
    words = list(words)
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise CliError("no program given: anp run [options] -- python app.py [args]")
    interpreter = None
    if _PYTHON_NAME.fullmatch(os.path.basename(words[0])):
        interpreter = words.pop(0)
    unbuffered = False
    while words and words[0].startswith("-") and words[0] != "-":
        opt = words.pop(0)
        if opt == "-u":
            unbuffered = True
        elif opt in ("-m", "-c"):
            if not words:
                raise CliError(f"python option {opt} needs an argument")
            kind = "module" if opt == "-m" else "code"
            return Program(kind, words[0], words[1:], unbuffered, interpreter)
        elif opt.startswith("-m") and len(opt) > 2:
            return Program("module", opt[2:], words, unbuffered, interpreter)
        else:
            raise CliError(
                f"python option {opt} is not supported by anp run (the program runs in anp's "
                "own interpreter; supported: -u, -m MODULE, -c CODE)"
            )
    if not words:
        raise CliError("no script given: anp run [options] -- python app.py [args]")
    script = words[0]
    if not os.path.exists(script):
        raise CliError(f"can't open file {script!r}: no such file")
    return Program("script", script, words[1:], unbuffered, interpreter)


class CliStackProvider:
    """Brings the stack up from ``anp run``'s options for one loop at a time."""

    def __init__(self, args: argparse.Namespace, announce: Callable[[str], None]) -> None:
        self.args = args
        self.announce = announce
        self.owner: asyncio.AbstractEventLoop | None = None
        self._cm: Any = None
        self.stack: Stack | None = None

    async def acquire(self, loop: asyncio.AbstractEventLoop) -> Stack:
        if self.owner is not None:
            raise StackUnavailableError(
                errno.EBUSY,
                "anp run: the stack already serves another event loop (one loop at a time)",
            )
        self.owner = loop
        cm = open_stack_from_args(self.args)
        try:
            stack = await cm.__aenter__()
        except CliError as e:
            self.owner = None
            raise StackUnavailableError(errno.EPERM, str(e)) from None
        except BaseException:
            self.owner = None
            raise
        self._cm = cm
        self.stack = stack
        # asyncio's kernel sockets run with TCP_NODELAY; so do the stack's connections.
        stack.tcp.config.nodelay = True
        a = self.args
        where = f" in netns {a.netns}" if a.netns else ""
        params = ",".join(f"{k}={v}" for k, v in stack.mode_params.items())
        self.announce(
            f"anp run: stack {a.ip} mac {stack.mac} up on tap {a.tap}{where}, kernel side "
            f"{a.peer}, mode {stack.mode_name}{'(' + params + ')' if params else ''}, "
            f"loop {type(loop).__name__}"
        )
        return stack

    async def release(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self.owner:
            return
        cm, self._cm = self._cm, None
        stack, self.stack = self.stack, None
        self.owner = None
        if cm is not None:
            stats = stack.stats() if stack is not None else {}
            await cm.__aexit__(None, None, None)
            tcp = stats.get("tcp", {})
            self.announce(
                f"anp run: stack down (tcp active_opens={tcp.get('active_opens', 0)} "
                f"passive_opens={tcp.get('passive_opens', 0)} "
                f"rx_segments={tcp.get('rx_segments', 0)} "
                f"tx_segments={tcp.get('tx_segments', 0)})"
            )

    def cleanup(self) -> None:
        """Last resort at exit: close the NIC and delete the namespace if a loop did not."""
        stack, self.stack = self.stack, None
        self._cm = None
        if stack is not None:
            with contextlib.suppress(Exception):
                stack.nic.close()
        if self.args.netns:
            from ..nic.netns import Netns

            ns = Netns(self.args.netns)
            if ns.exists():
                ns.delete()


def _announce(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _exit_status(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _print_program_traceback(exc: BaseException) -> None:
    """The traceback as ``python app.py`` shows it: without anp's and runpy's frames."""
    tb: types.TracebackType | None = exc.__traceback__
    skip = (__file__, runpy.__file__)
    while tb is not None and tb.tb_frame.f_code.co_filename in skip:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def _run_program(prog: Program) -> int:
    if prog.unbuffered:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, ValueError):
                stream.reconfigure(write_through=True)  # type: ignore[union-attr]
    main_module = sys.modules["__main__"]
    try:
        if prog.kind == "script":
            path = os.path.abspath(prog.target)
            sys.argv = [prog.target, *prog.args]
            sys.path[0] = os.path.dirname(path)
            runpy.run_path(path, run_name="__main__")
        elif prog.kind == "module":
            sys.argv = [prog.target, *prog.args]  # runpy puts the module's path in argv[0]
            sys.path[0] = os.getcwd()
            runpy.run_module(prog.target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *prog.args]
            sys.path[0] = ""
            code = compile(prog.target, "<string>", "exec")
            exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
        return 0
    except SystemExit as e:
        return _exit_status(e.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130
    except StackUnavailableError as e:
        raise CliError(str(e)) from None
    except BaseException as e:  # the program's own error: shown as python shows it
        _print_program_traceback(e)
        return 1
    finally:
        sys.modules["__main__"] = main_module


def sigterm_exit(signum: int, frame: Any) -> None:
    # SIGTERM's default action would kill the process before the stack's namespace is
    # removed: exit through Python instead (programs may install their own handler).
    raise SystemExit(128 + signum)


def cmd_run_inprocess(args: argparse.Namespace) -> int:
    """The in-process path of ``anp run``: the program's exit status."""
    prog = parse_program(args.program)
    _check_stack_args(args)
    mode_from_args(args)  # bad mode options fail now, not in the program's first connect
    try:
        host_map = parse_host_map(args.map_host)
    except ValueError as e:
        raise CliError(f"--map-host {e}") from None
    if args.netns:
        from ..nic.netns import Netns

        if Netns(args.netns).exists():
            raise CliError(f"network namespace {args.netns} already exists")
    if args.loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise CliError("--loop uvloop needs the uvloop package (pip install uvloop)") from None
    if prog.interpreter and os.sep in prog.interpreter:
        own = os.path.realpath(sys.executable)
        if os.path.realpath(prog.interpreter) != own:
            _announce(f"anp run: note: the program runs in anp's interpreter {sys.executable}")

    provider = CliStackProvider(args, _announce)
    policy = StackEventLoopPolicy(provider, args.loop, host_map)
    old_policy = asyncio.get_event_loop_policy()
    old_argv, old_path0 = sys.argv[:], sys.path[0]
    old_sigterm = signal.signal(signal.SIGTERM, sigterm_exit)
    asyncio.set_event_loop_policy(policy)
    try:
        return _run_program(prog)
    finally:
        try:
            policy.close_loops()
        finally:
            provider.cleanup()
            asyncio.set_event_loop_policy(old_policy)
            signal.signal(signal.SIGTERM, old_sigterm)
            sys.argv[:] = old_argv
            sys.path[0] = old_path0
