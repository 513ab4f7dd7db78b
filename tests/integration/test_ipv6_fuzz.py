"""The stack's IPv6 receive path under mutated frames: every frame is dropped and counted or
answered, nothing raises out of the receive batch (hypothesis, stack on the wire)."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import UDP as UDP6
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import Ether

from anp_async import Stack, StackConfig
from anp_async.nic.wire import Wire

MAC = "02:00:00:00:00:02"
PEER = "02:00:00:00:00:01"


def _frames() -> list[bytes]:
    e = Ether(dst=MAC, src=PEER)
    mc = Ether(dst="33:33:ff:00:00:02", src=PEER)
    a, b = "fd00::1", "fd00::2"
    return [
        bytes(e / IPv6(src=a, dst=b) / ICMPv6EchoRequest(id=1, seq=2, data=b"ping")),
        bytes(
            mc
            / IPv6(src=a, dst="ff02::1:ff00:2", hlim=255)
            / ICMPv6ND_NS(tgt=b)
            / ICMPv6NDOptSrcLLAddr(lladdr=PEER)
        ),  # fmt: skip
        bytes(e / IPv6(src=a, dst=b, hlim=255) / ICMPv6ND_NA(tgt=a, S=1, O=1)),
        bytes(
            e
            / IPv6(src="fe80::1", dst="ff02::1", hlim=255)
            / ICMPv6ND_RA(routerlifetime=60)
            / ICMPv6NDOptMTU(mtu=1400)
            / ICMPv6NDOptPrefixInfo(prefix="fd01::", prefixlen=64)
        ),
        bytes(
            e
            / IPv6(src=a, dst=b)
            / IPv6ExtHdrHopByHop()
            / IPv6ExtHdrDestOpt()
            / UDP6(dport=9)
            / b"u"
        ),
        bytes(e / IPv6(src=a, dst=b) / IPv6ExtHdrFragment(m=1, id=5) / (b"f" * 16)),
        bytes(e / IPv6(src=a, dst=b) / IPv6ExtHdrFragment(offset=2, id=5) / (b"g" * 9)),
        bytes(
            e
            / IPv6(src=a, dst=b)
            / ICMPv6PacketTooBig(mtu=1280)
            / IPv6(src=b, dst=a)
            / UDP6(sport=9, dport=9)
        ),  # fmt: skip
        bytes(e / IPv6(src=a, dst=b, nh=6) / (b"\x00" * 20)),
    ]


FRAMES = _frames()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(st.sampled_from(FRAMES)))
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(14, len(buf) - 1))  # keep the Ethernet header
        buf[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        buf = buf[: draw(st.integers(14, len(buf)))]
    return bytes(buf + draw(st.binary(max_size=8)))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(mutated(), min_size=1, max_size=8))
def test_mutated_ipv6_frames_never_raise(frames: list[bytes]) -> None:
    async def run() -> None:
        nic, _other = Wire.pair()
        cfg = StackConfig(nic=nic, ip="10.0.0.2/24", ip6="fd00::2/64", mac=MAC, dad_transmits=0)
        async with Stack(cfg) as stack:
            stack._rx_batch(frames)  # raises if anything escapes
            await asyncio.sleep(0)
            st_ = stack.stats()["ipv6"]
            assert st_["nd"]["entries"] <= 1024
        _other.close()

    asyncio.run(run())
