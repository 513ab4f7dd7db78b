"""proto/tcp/minfilter.py: the windowed minimum RACK's min_RTT uses (RFC 8985 6.2)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from anp_async.proto.tcp.minfilter import WindowedMin


def test_starts_empty_and_keeps_the_smallest() -> None:
    f = WindowedMin(10.0)
    assert f.value == math.inf
    assert f.update(0.0, 0.05) == 0.05
    assert f.update(1.0, 0.08) == 0.05
    assert f.update(2.0, 0.03) == 0.03
    assert f.update(3.0, 0.04) == 0.03


def test_a_longer_path_replaces_the_old_minimum_within_a_window() -> None:
    # RTT 10 ms, then the path becomes 100 ms for good: a global minimum would stay at
    # 10 ms forever; the window forgets it.
    f = WindowedMin(10.0)
    t = 0.0
    while t < 5.0:
        f.update(t, 0.010)
        t += 0.5
    while t < 16.0:
        f.update(t, 0.100)
        t += 0.5
    assert f.value == 0.100


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 3.0), st.floats(0.001, 1.0)), min_size=1, max_size=60
    )
)
def test_never_below_the_window_minimum_nor_above_the_newest_sample(
    steps: list[tuple[float, float]],
) -> None:
    window = 5.0
    f = WindowedMin(window)
    t = 0.0
    seen: list[tuple[float, float]] = []
    for dt, v in steps:
        t += dt
        got = f.update(t, v)
        seen.append((t, v))
        in_window = [x for (ts, x) in seen if t - ts <= window]
        # It answers a sample of the last window (so never below their minimum) ...
        assert got >= min(in_window)
        assert got in in_window
        # ... and never more than the newest sample.
        assert got <= v
