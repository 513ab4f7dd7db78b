"""Bulk receive through the TAP's virtio-net header: the kernel's 64 KiB super-segments take
the raw-frame header prediction (no layer-by-layer parse), and receive-window autotuning
grows the window from 256 KiB as the application keeps up."""

from __future__ import annotations

from typing import Any

from anp_async.nic.netns import Netns
from anp_async.nic.tap import TapNic
from anp_async.nic.vnet import GSO_TCPV4
from tests.integration.test_offload import MiB, stack_on, stack_receives, vnet_tap

__all__ = ["vnet_tap"]  # the fixture


async def test_super_segments_take_the_fast_path_and_the_window_grows(
    vnet_tap: tuple[Netns, TapNic],
) -> None:
    ns, tap = vnet_tap
    async with stack_on(tap, "adaptive") as stack:
        taken = {"gso": 0, "plain": 0}
        rx_fast = stack.tcp.rx_fast

        def counting(frame: bytes, off: int, trusted: bool) -> bool:
            ok = rx_fast(frame, off, trusted)
            if ok:
                taken["gso" if frame[1] == GSO_TCPV4 else "plain"] += 1
            return ok

        stack.tcp.rx_fast = counting  # type: ignore[method-assign]
        await stack_receives(stack, ns, 5003, 16 * MiB, 3)
        stats: dict[str, Any] = stack.stats()
    assert stats["offload"]["gso_frames_received"] > 50
    # Nearly every super-segment was predicted (not the handshake's or the FIN's frames).
    assert taken["gso"] > 0.9 * stats["offload"]["gso_frames_received"], (taken, stats["offload"])
    # 256 KiB -> 4 MiB takes four doublings after 3.75 MiB received with the reader keeping up.
    assert stats["tcp"]["conn_rcv_space_grown"] == 4
