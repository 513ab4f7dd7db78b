"""Receive modes: how frames get from the NIC into the stack.

``make_mode(name, **params)`` builds one of :data:`MODES`. Parameters that belong to a
different mode are ignored, so a caller (the CLI, ``StackConfig``) can pass every knob it
has and let the chosen mode pick its own:

==========  ====================================  =========================
mode        parameters (default)                  what it mirrors
==========  ====================================  =========================
interrupt   --                                    one IRQ per frame
coalesce    rx_frames (32), rx_usecs (50)         ``ethtool -C``
poll        budget (64)                           ``SO_BUSY_POLL``
adaptive    weight (64), busy_poll_usecs (0)      NAPI
==========  ====================================  =========================

Unknown mode names, unknown parameter names (belonging to no mode) and out-of-range
values raise ``ValueError`` with a sentence that says what is wrong.
"""

from __future__ import annotations

from .adaptive import AdaptiveMode
from .base import Deliver, ModeStats, RxMode
from .coalesce import CoalesceMode
from .interrupt import InterruptMode
from .poll import PollMode

MODES = ("interrupt", "coalesce", "poll", "adaptive")

#: Each mode's class and the parameter names it takes.
_PARAMS: dict[str, tuple[type[RxMode], tuple[str, ...]]] = {
    "interrupt": (InterruptMode, ()),
    "coalesce": (CoalesceMode, ("rx_frames", "rx_usecs")),
    "poll": (PollMode, ("budget",)),
    "adaptive": (AdaptiveMode, ("weight", "busy_poll_usecs")),
}
ALL_PARAMS = frozenset(p for _, names in _PARAMS.values() for p in names)


def make_mode(name: str, **params: int) -> RxMode:
    """Build the receive mode ``name`` with its parameters taken from ``params``.

    Parameters of the other modes are ignored (``None`` values too, meaning "default");
    a parameter no mode knows, an unknown mode or a bad value raises ``ValueError``.
    """
    entry = _PARAMS.get(name)
    if entry is None:
        raise ValueError(f"unknown receive mode {name!r}; choose one of {', '.join(MODES)}")
    unknown = sorted(set(params) - ALL_PARAMS)
    if unknown:
        raise ValueError(
            f"unknown receive-mode parameter(s) {', '.join(unknown)}; "
            f"known ones are {', '.join(sorted(ALL_PARAMS))}"
        )
    cls, names = entry
    mine = {k: v for k, v in params.items() if k in names and v is not None}
    return cls(**mine)


__all__ = [
    "MODES",
    "AdaptiveMode",
    "CoalesceMode",
    "Deliver",
    "InterruptMode",
    "ModeStats",
    "PollMode",
    "RxMode",
    "make_mode",
]
