"""Fixtures of the conformance suite: every case runs against the stack and against Linux.

Namespaces: one for the stack's TAP (a fresh TAP per case) and two for the Linux veth pair,
created for this session and deleted at its end (also on failure). The outcome of every
case on every target, with what it observed, is written to a JSON file at the end of the
session (``ANP_CONFORMANCE_JSON``, default ``/tmp/anp-conformance.json``); render it with
``python -m tests.conformance.report``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import hypothesis  # noqa: F401  (imported early: see the note below)
import pytest

from anp_async.nic.netns import Netns
from tests.conformance.harness import Target
from tests.conformance.targets import LinuxEnv, LinuxTarget, StackTarget
from tests.netutil import is_root

# Note: hypothesis' pytest plugin imports hypothesis lazily at the terminal summary; under
# Python 3.11 that late import (through pytest's assertion rewriter) can fail with
# "AST constructor recursion depth mismatch". Importing it here, early, avoids that.

RESULTS_PATH = os.environ.get("ANP_CONFORMANCE_JSON", "/tmp/anp-conformance.json")
_results: dict[str, dict[str, Any]] = {}


def _need_root() -> None:
    if not is_root():
        pytest.fail("the conformance suite needs root (network namespaces, TAP, veth)")


@pytest.fixture(scope="session")
def stack_ns() -> Iterator[Netns]:
    _need_root()
    ns = Netns.create()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture(scope="session")
def linux_env() -> Iterator[LinuxEnv]:
    _need_root()
    env = LinuxEnv()
    try:
        yield env
    finally:
        env.close()


class Recorder:
    """What a case observed on its target, for the conformance table."""

    def __init__(self, case: str, target: str, doc: str) -> None:
        self.case = case
        self.target = target
        self.doc = doc
        self.observed: list[str] = []
        self.deviation: str | None = None

    def __call__(self, observed: str) -> None:
        self.observed.append(observed)

    def deviates(self, note_id: str) -> None:
        """The target passes with documented behaviour that differs from the RFC's words."""
        self.deviation = note_id


@pytest.fixture(params=["stack", "stack-offload", "linux"])
async def target(
    request: pytest.FixtureRequest, stack_ns: Netns, linux_env: LinuxEnv
) -> AsyncIterator[Target]:
    t: StackTarget | LinuxTarget
    if request.param == "stack":
        t = StackTarget(stack_ns)
    elif request.param == "stack-offload":
        t = StackTarget(stack_ns, offload=True)
    else:
        t = LinuxTarget(linux_env)
    await t.start()
    try:
        yield t
    finally:
        await t.aclose()


@pytest.fixture
def record(request: pytest.FixtureRequest, target: Target) -> Recorder:
    fn = request.node.function
    rec = Recorder(fn.__name__, target.name, (fn.__doc__ or "").strip())
    request.node._conformance = rec
    return rec


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    rec: Recorder | None = getattr(item, "_conformance", None)
    if rec is not None and (rep.when == "call" or rep.failed):
        case = _results.setdefault(
            rec.case,
            {
                "doc": rec.doc,
                "module": item.module.__name__.rsplit(".", 1)[-1],  # type: ignore[attr-defined]
                "order": len(_results),
                "targets": {},
            },
        )
        prev = case["targets"].get(rec.target)
        if prev is None or rep.failed:
            case["targets"][rec.target] = {
                "outcome": rep.outcome,
                "observed": rec.observed,
                "deviation": rec.deviation,
                "error": str(rep.longrepr).splitlines()[-1][:300] if rep.failed else None,
            }
    return rep


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _results:
        return
    try:
        with open(RESULTS_PATH) as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = {}
    old.update(_results)
    with open(RESULTS_PATH, "w") as f:
        json.dump(old, f, indent=1)
