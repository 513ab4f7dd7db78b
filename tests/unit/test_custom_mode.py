"""``Stack.set_mode`` takes a mode object of one's own (examples/custom_mode.py)."""

from __future__ import annotations

import pytest

from anp_async.modes import InterruptMode
from tests.stackutil import wire_stacks


class CountingMode(InterruptMode):
    """Interrupt mode under another name: enough to see the stack run a mode it never built."""

    name = "counting"


async def test_set_mode_accepts_a_mode_object():
    async with wire_stacks() as (a, b):
        mode = CountingMode()
        b.set_mode(mode)
        await a.ping("10.0.0.2")
        assert b.mode_name == "counting" and b.config.mode == "counting"
        assert mode.stats.frames >= 1 and b.stats()["mode"]["name"] == "counting"
        with pytest.raises(ValueError, match="constructor"):
            b.set_mode(CountingMode(), budget=3)
        b.set_mode("poll", budget=8)  # and back to a named one
        await a.ping("10.0.0.2")
        assert b.mode_params == {"budget": 8}
