"""Fixtures shared by every test: a fresh network namespace, a TAP inside one.

Network safety: every device and packet a test creates lives in a namespace created by
this run and deleted afterwards, even when the test fails; at the end of the session any
namespace this run created and left behind is deleted and the run marked failed.

These fixtures need root. Without it they fail with a clear message (never skip: CI runs
as root and a skipped test counts as failed).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anp_async.nic.netns import Netns, created_namespaces, names_created
from anp_async.nic.tap import TapNic
from tests.netutil import (
    KERNEL_CIDR,
    KERNEL_IP,
    STACK_CIDR,
    STACK_IP,
    STACK_MAC,
    TAP_NAME,
    is_root,
)

__all__ = ["KERNEL_CIDR", "KERNEL_IP", "STACK_CIDR", "STACK_IP", "STACK_MAC", "TAP_NAME"]


def require_root() -> None:
    """Fail (not skip) a test that needs namespaces when not running as root."""
    if not is_root():
        pytest.fail("this test needs root (network namespaces, /dev/net/tun): run as root")


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh namespace ``anp-<random>``, deleted after the test (also on failure)."""
    require_root()
    ns = Netns.create()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def tap_pair(netns: Netns) -> Iterator[tuple[Netns, TapNic]]:
    """(namespace, TAP ``anptap0`` inside it): kernel end 10.0.0.1/24, IPv6 off, up.

    The stack under test takes 10.0.0.2 (``tests.netutil.STACK_IP``) on the other side.
    """
    tap = TapNic.open(TAP_NAME, peer=KERNEL_CIDR, netns=netns)
    try:
        yield netns, tap
    finally:
        tap.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Delete namespaces this run created and left behind; fail the run if there were any,
    or if any namespace it created was not named ``anp-<unique>``."""
    misnamed = sorted(n for n in names_created() if not n.startswith("anp-"))
    if misnamed:
        print(f"\nconftest: namespaces not named anp-<unique>: {misnamed}")
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    leftovers = sorted(created_namespaces())
    for name in leftovers:
        try:
            Netns(name).delete()
        except OSError as e:  # keep cleaning the others
            print(f"\nconftest: could not delete namespace {name}: {e}")
    if leftovers:
        print(f"\nconftest: namespaces left behind by this run (now deleted): {leftovers}")
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
