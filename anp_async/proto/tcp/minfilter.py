"""A windowed minimum: the smallest sample of the last ``window`` seconds, O(1) per sample.

RFC 8985 (6.2, step 4) asks RACK for a windowed min-filtered RTT "that can adapt when
migrating to significantly longer paths rather than a simple global minimum". Linux keeps
its min_rtt over a 300 s window (``tcp_min_rtt_wlen``).

Kept as three candidates ``(time, value)``, the best first, their times spread over the
window (Kathleen Nichols' running min): when the best one ages out, the second takes its
place, so the filter forgets an old minimum within one window without storing every
sample. Between refreshes the answer may be a little larger than the exact windowed
minimum (a sample that was not the best of its quarter- or half-window is not kept),
never smaller than the true minimum of the last window.
"""

from __future__ import annotations

import math

__all__ = ["WindowedMin"]


class WindowedMin:
    """The running minimum of ``(time, value)`` samples over ``window`` seconds."""

    __slots__ = ("window", "_c")

    def __init__(self, window: float) -> None:
        self.window = window
        # three candidates, best first; (inf: no sample yet)
        self._c: list[tuple[float, float]] = [(-math.inf, math.inf)] * 3

    def __eq__(self, other: object) -> bool:
        # two filters that would give the same answers from here on (state comparisons)
        if not isinstance(other, WindowedMin):
            return NotImplemented
        return self.window == other.window and self._c == other._c

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"WindowedMin(window={self.window}, candidates={self._c})"

    @property
    def value(self) -> float:
        """The current minimum (``inf`` before the first sample)."""
        return self._c[0][1]

    def update(self, now: float, sample: float) -> float:
        """Take ``sample`` measured at ``now`` (non-decreasing); return the minimum."""
        c = self._c
        new = (now, sample)
        if sample <= c[0][1] or now - c[2][0] > self.window:
            # a new best, or nothing in the window is recent enough to keep
            c[0] = c[1] = c[2] = new
            return sample
        if sample <= c[1][1]:
            c[1] = c[2] = new
        elif sample <= c[2][1]:
            c[2] = new
        return self._age(new)

    def _age(self, new: tuple[float, float]) -> float:
        """Let the best candidate expire, and refresh candidates that share its time so
        that they cover the later quarter and half of the window."""
        c = self._c
        age = new[0] - c[0][0]
        if age > self.window:
            c[0], c[1], c[2] = c[1], c[2], new
            if new[0] - c[0][0] > self.window:
                c[0], c[1], c[2] = c[1], c[2], new
        elif c[1][0] == c[0][0] and age > self.window / 4:
            c[1] = c[2] = new
        elif c[2][0] == c[1][0] and age > self.window / 2:
            c[2] = new
        return c[0][1]
