"""IPv6 Neighbor Discovery (RFC 4861/4862) and ICMPv6 (RFC 4443, RFC 8200) against the
stack and Linux in the same run.

The fake host speaks IPv6 through its own packet socket beside the IPv4 one: fd00::3 to
the stack's fd00::2, fd00:1::3 to Linux's fd00:1::2 (namespace B gets that address and
IPv6 on ``cfb`` here; ICMPv6 error rate limiting off so cases do not starve each other).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from scapy.layers.inet6 import UDP as UDP6
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6ParamProblem,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    fragment6,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.conformance.conftest import Recorder
from tests.conformance.harness import PACKET_OUTGOING, PEER_MAC, Target
from tests.conformance.targets import STACK_IP6, TAP, VETH_A, VETH_B

ETH_P_IPV6 = 0x86DD
LINUX_IP6 = "fd00:1::2"
_linux_ready = False


def _solicited(ip: str) -> str:
    b = socket.inet_pton(socket.AF_INET6, ip)
    return socket.inet_ntop(socket.AF_INET6, bytes.fromhex("ff0200000000000000000001ff") + b[13:])


def _mcast_mac(ip: str) -> str:
    b = socket.inet_pton(socket.AF_INET6, ip)
    return ":".join(f"{x:02x}" for x in b"\x33\x33" + b[12:])


class V6Wire:
    """The fake host's IPv6: a packet socket for EtherType 0x86DD that answers the
    target's Neighbor Solicitations for our address and keeps everything else."""

    def __init__(self, ns: Any, ifname: str, my_ip: str, target_ip: str, target_mac: str) -> None:
        with ns.enter():
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
            sock.bind((ifname, ETH_P_IPV6))
        sock.setblocking(False)
        self.sock = sock
        self.my_ip, self.target_ip, self.target_mac = my_ip, target_ip, target_mac
        self.pending: list[Any] = []
        self.sent = 0
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _on_readable(self) -> None:
        for _ in range(256):
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            pkt = Ether(data)
            if IPv6 not in pkt or pkt.src != self.target_mac:
                continue
            if ICMPv6ND_NS in pkt and pkt[ICMPv6ND_NS].tgt == self.my_ip:
                self.send(
                    IPv6(src=self.my_ip, dst=pkt[IPv6].src, hlim=255)
                    / ICMPv6ND_NA(tgt=self.my_ip, S=1, O=1, R=0)
                    / ICMPv6NDOptDstLLAddr(lladdr=PEER_MAC)
                )
                continue
            self.pending.append(pkt[IPv6])

    def send(self, ip6: Any, dst_mac: str | None = None) -> None:
        self.sent += 1
        assert self.sent < 2000, "runaway sending loop"
        self.sock.send(bytes(Ether(dst=dst_mac or self.target_mac, src=PEER_MAC) / ip6))

    async def expect(self, pred: Any, what: str, timeout: float = 1.5) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, p in enumerate(self.pending):
                if pred(p):
                    return self.pending.pop(i)
            await asyncio.sleep(0.01)
        raise AssertionError(
            f"timed out waiting for {what}; got {[p.summary() for p in self.pending]}"
        )

    async def expect_none(self, pred: Any, what: str, within: float = 0.4) -> None:
        await asyncio.sleep(within)
        bad = [p.summary() for p in self.pending if pred(p)]
        assert not bad, f"unexpected {what}: {bad}"


async def v6wire(target: Target) -> V6Wire:
    global _linux_ready
    if target.name == "linux":
        env = target.env  # type: ignore[attr-defined]
        if not _linux_ready:
            for cmd in (
                ["sysctl", "-q", "-w", f"net.ipv6.conf.{VETH_B}.disable_ipv6=0"],
                ["sysctl", "-q", "-w", f"net.ipv6.conf.{VETH_B}.accept_dad=0"],
                ["sysctl", "-q", "-w", "net.ipv6.icmp.ratelimit=0"],
                ["ip", "-6", "addr", "replace", f"{LINUX_IP6}/64", "dev", VETH_B, "nodad"],
            ):
                env.ns_b.run(cmd, check=True)
            _linux_ready = True
        return V6Wire(env.ns_a, VETH_A, "fd00:1::3", LINUX_IP6, target.mac)
    return V6Wire(target.ns, TAP, "fd00::3", STACK_IP6, target.mac)  # type: ignore[attr-defined]


def _ns(w: V6Wire, *, hlim: int = 255, src: str | None = None, dst: str | None = None) -> Any:
    s = src or w.my_ip
    pkt = IPv6(src=s, dst=dst or _solicited(w.target_ip), hlim=hlim) / ICMPv6ND_NS(tgt=w.target_ip)
    return pkt if s == "::" else pkt / ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC)


async def test_rfc4861_7_2_4_solicitation_answered(target: Target, record: Recorder) -> None:
    """RFC 4861 7.2.4: an NS for the target's address gets a solicited NA with the Override
    flag and its link-layer address, hop limit 255, sent to the solicitor."""
    w = await v6wire(target)
    try:
        w.send(_ns(w), dst_mac=_mcast_mac(_solicited(w.target_ip)))
        na = await w.expect(lambda p: ICMPv6ND_NA in p, "NA")
        a = na[ICMPv6ND_NA]
        assert (a.S, a.O, a.R, a.tgt) == (1, 1, 0, w.target_ip), na.summary()
        assert na.hlim == 255 and na.dst == w.my_ip
        assert na[ICMPv6NDOptDstLLAddr].lladdr == w.target_mac
        record(f"NA S=1 O=1 R=0 hlim=255 tlla={w.target_mac}")
    finally:
        w.close()


async def test_rfc4861_7_1_1_solicitation_hop_limit_not_255_ignored(
    target: Target, record: Recorder
) -> None:
    """RFC 4861 7.1.1: an NS whose hop limit is not 255 may come from off the link; ignored."""
    w = await v6wire(target)
    try:
        w.send(_ns(w, hlim=64), dst_mac=_mcast_mac(_solicited(w.target_ip)))
        await w.expect_none(lambda p: ICMPv6ND_NA in p, "NA to an NS with hop limit 64")
        record("no answer")
    finally:
        w.close()


async def test_rfc4862_5_4_3_dad_probe_for_address_in_use(target: Target, record: Recorder) -> None:
    """RFC 4861 7.2.4 / RFC 4862 5.4.3: a DAD probe (from ::) for an address in use is
    defended with an unsolicited NA to all-nodes (S=0)."""
    w = await v6wire(target)
    try:
        w.send(_ns(w, src="::"), dst_mac=_mcast_mac(_solicited(w.target_ip)))
        na = await w.expect(lambda p: ICMPv6ND_NA in p, "NA defending the address")
        assert na.dst == "ff02::1" and na[ICMPv6ND_NA].S == 0, na.summary()
        record(f"NA to {na.dst} S=0 O={na[ICMPv6ND_NA].O}")
    finally:
        w.close()


def _echo(w: V6Wire, ident: int = 0x1234, seq: int = 1, data: bytes = b"anp-v6") -> Any:
    return IPv6(src=w.my_ip, dst=w.target_ip) / ICMPv6EchoRequest(id=ident, seq=seq, data=data)


async def test_rfc4443_4_2_echo_reply(target: Target, record: Recorder) -> None:
    """RFC 4443 4.2: an Echo Request gets an Echo Reply with its identifier, sequence number
    and data (the target first resolves us with Neighbor Discovery)."""
    w = await v6wire(target)
    try:
        w.send(_echo(w, data=bytes(range(200))))
        r = await w.expect(lambda p: ICMPv6EchoReply in p, "echo reply")
        e = r[ICMPv6EchoReply]
        assert (e.id, e.seq, bytes(e.data)) == (0x1234, 1, bytes(range(200)))
        record(f"reply id/seq/data echoed, from {r.src}")
    finally:
        w.close()


async def test_rfc4443_2_3_bad_checksum_dropped(target: Target, record: Recorder) -> None:
    """RFC 4443 2.3: a message with a wrong checksum (pseudo-header included) is dropped."""
    w = await v6wire(target)
    try:
        pkt = _echo(w)
        pkt[ICMPv6EchoRequest].cksum = 0x1111
        w.send(pkt)
        await w.expect_none(lambda p: ICMPv6EchoReply in p, "reply to a corrupt echo request")
        record("no reply")
    finally:
        w.close()


async def test_rfc8200_4_unknown_next_header_parameter_problem(
    target: Target, record: Recorder
) -> None:
    """RFC 8200 4 / RFC 4443 3.4: an unrecognised Next Header gets Parameter Problem code 1
    pointing at the Next Header field."""
    w = await v6wire(target)
    try:
        w.send(IPv6(src=w.my_ip, dst=w.target_ip, nh=253) / Raw(b"x" * 16))
        pp = await w.expect(lambda p: ICMPv6ParamProblem in p, "parameter problem")
        assert (pp[ICMPv6ParamProblem].code, pp[ICMPv6ParamProblem].ptr) == (1, 6)
        record("Parameter Problem code 1 pointer 6")
    finally:
        w.close()


async def test_rfc8200_4_unknown_next_header_after_extension(
    target: Target, record: Recorder
) -> None:
    """RFC 8200 4 / RFC 4443 3.4: after a Destination Options header, the pointer names that
    header's Next Header field (offset 40)."""
    w = await v6wire(target)
    try:
        opts = Raw(bytes([253, 0, 1, 4, 0, 0, 0, 0]))  # Next Header 253, PadN
        w.send(IPv6(src=w.my_ip, dst=w.target_ip, nh=60) / opts / Raw(b"y" * 16))
        pp = await w.expect(lambda p: ICMPv6ParamProblem in p, "parameter problem")
        assert (pp[ICMPv6ParamProblem].code, pp[ICMPv6ParamProblem].ptr) == (1, 40)
        record("Parameter Problem code 1 pointer 40")
    finally:
        w.close()


async def test_rfc8200_4_2_unknown_option_action_10(target: Target, record: Recorder) -> None:
    """RFC 8200 4.2: an unrecognised option whose type starts with binary 10 discards the
    packet and sends Parameter Problem code 2 pointing at the option."""
    w = await v6wire(target)
    try:
        opt = Raw(bytes([0x9E, 4, 0, 0, 0, 0]))  # type 0x9e: action 10, unknown
        dst = IPv6ExtHdrDestOpt(nh=58, len=0, options=[]) / opt
        pkt = (
            IPv6(src=w.my_ip, dst=w.target_ip, nh=60)
            / Raw(bytes(dst)[:2] + bytes(opt))
            / ICMPv6EchoRequest(id=7)
        )
        w.send(pkt)
        pp = await w.expect(lambda p: ICMPv6ParamProblem in p, "parameter problem")
        assert (pp[ICMPv6ParamProblem].code, pp[ICMPv6ParamProblem].ptr) == (2, 42)
        await w.expect_none(lambda p: ICMPv6EchoReply in p, "echo reply despite the option")
        record("Parameter Problem code 2 pointer 42, no reply")
    finally:
        w.close()


async def test_rfc8200_4_5_fragments_reassembled(target: Target, record: Recorder) -> None:
    """RFC 8200 4.5: an Echo Request in three fragments, sent last first, is answered."""
    w = await v6wire(target)
    try:
        whole = (
            IPv6(src=w.my_ip, dst=w.target_ip)
            / IPv6ExtHdrFragment(id=0x5150)
            / ICMPv6EchoRequest(id=9, seq=9, data=bytes(3000))
        )
        for f in reversed(fragment6(whole, 1280)):
            w.send(f)
        r = await w.expect(lambda p: ICMPv6EchoReply in p, "echo reply", timeout=3.0)
        assert len(r[ICMPv6EchoReply].data) == 3000 or IPv6ExtHdrFragment in r
        record("answered" + (" (reply fragmented)" if IPv6ExtHdrFragment in r else ""))
    finally:
        w.close()


async def test_rfc5722_overlapping_fragments_dropped(target: Target, record: Recorder) -> None:
    """RFC 5722: a packet with overlapping fragments is discarded silently."""
    w = await v6wire(target)
    try:
        whole = (
            IPv6(src=w.my_ip, dst=w.target_ip)
            / IPv6ExtHdrFragment(id=0x5151)
            / ICMPv6EchoRequest(id=10, seq=10, data=bytes(2000))
        )
        frags = fragment6(whole, 1280)
        over = frags[1].copy()
        over[IPv6ExtHdrFragment].offset -= 1  # 8 bytes into the first fragment's data
        for f in (frags[0], over, frags[1]):
            w.send(f)
        await w.expect_none(lambda p: ICMPv6EchoReply in p, "reply to overlapping fragments", 0.6)
        record("no reply")
    finally:
        w.close()


async def test_rfc4443_3_1_udp_closed_port(target: Target, record: Recorder) -> None:
    """RFC 4443 3.1: a datagram to a closed UDP port gets Destination Unreachable code 4
    (port unreachable) quoting it."""
    w = await v6wire(target)
    try:
        w.send(IPv6(src=w.my_ip, dst=w.target_ip) / UDP6(sport=4000, dport=9) / b"closed?")
        du = await w.expect(lambda p: ICMPv6DestUnreach in p, "port unreachable")
        assert du[ICMPv6DestUnreach].code == 4
        assert bytes(du[ICMPv6DestUnreach].payload)[40:42] == (4000).to_bytes(2, "big")
        record("Destination Unreachable code 4, datagram quoted")
    finally:
        w.close()
