"""``anp_async.install(stack)``: make the running program's asyncio networking use a stack.

From inside Python, without ``anp run``::

    async with anp_async.Stack(config) as stack:
        with anp_async.installed(stack):
            reader, writer = await asyncio.open_connection("10.0.0.1", 8080)  # on the stack
            server = await asyncio.start_server(handler, "0.0.0.0", 8080)     # on the stack

``install`` turns the stack's event loop (the running one) into a stack loop in place: the
loop object stays the same -- its callbacks, tasks and timers go on -- and its class becomes
a subclass of its own class with :class:`~anp_async.transport.loop.StackLoopMixin` in
front, so ``create_connection``, ``create_server``, ``create_datagram_endpoint``,
``getaddrinfo`` ... follow the routing rule of :mod:`anp_async.transport.loop`. Works for
asyncio's default loop and for uvloop. ``uninstall`` (or leaving ``installed``) restores the
class; the stack itself stays up (its owner closes it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from .transport.loop import FixedStackProvider, StackLoopMixin

if TYPE_CHECKING:
    from .stack import Stack

_routed_classes: dict[type, type] = {}


def _routed_class(cls: type) -> type:
    routed = _routed_classes.get(cls)
    if routed is None:
        routed = type(f"Stack{cls.__name__}", (StackLoopMixin, cls), {"__module__": __name__})
        _routed_classes[cls] = routed
    return routed


class Installation:
    """A stack installed on a loop; :meth:`uninstall` puts the loop back as it was."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stack: Stack, original: type) -> None:
        self.loop = loop
        self.stack = stack
        self._original = original

    def uninstall(self) -> None:
        """Route the loop's networking to the kernel again (connections stay open)."""
        loop = self.loop
        if isinstance(loop, StackLoopMixin) and type(loop) is not self._original:
            loop.__class__ = self._original
            for name in [n for n in vars(loop) if n.startswith("_anp_")]:
                delattr(loop, name)


def install(
    stack: Stack,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    host_map: Mapping[str, str] | None = None,
) -> Installation:
    """Make ``loop`` (default: the stack's loop) do its networking on ``stack``.

    ``stack`` must be started (``async with Stack(...)``); ``host_map`` rewrites hosts
    before routing (``{"127.0.0.1": "10.0.0.1"}``). Raises RuntimeError if the loop already
    routes to a stack.
    """
    target = loop or stack.loop
    if target is None:
        raise RuntimeError("install() needs a started stack (async with Stack(...) first)")
    if stack.loop is not None and stack.loop is not target:
        raise RuntimeError("the stack runs on another event loop")
    if isinstance(target, StackLoopMixin):
        raise RuntimeError("this event loop already routes its networking to a stack")
    original = type(target)
    # Same object, a subclass with the routing methods in front: no slots are added, so
    # the instance layout is unchanged and the assignment is allowed.
    target.__class__ = _routed_class(original)
    assert isinstance(target, StackLoopMixin)
    target._anp_setup(FixedStackProvider(stack), host_map)
    target._anp_stack = stack
    return Installation(target, stack, original)


@contextlib.contextmanager
def installed(
    stack: Stack,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    host_map: Mapping[str, str] | None = None,
) -> Iterator[Installation]:
    """``with installed(stack):`` -- :func:`install` for the block, uninstalled after it."""
    inst = install(stack, loop=loop, host_map=host_map)
    try:
        yield inst
    finally:
        inst.uninstall()


__all__ = ["Installation", "install", "installed"]
