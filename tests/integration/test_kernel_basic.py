"""The Linux kernel against the stack over a TAP, in a namespace this test creates.

The kernel's own tools are the peers: ``arping`` and ``ping`` get answers in every receive
mode, ``anp``'s ping reaches the kernel, a kernel-side UDP client gets its echo, modes
switch mid-ping with no loss, the pcap decodes in tshark, and malformed frames written
into the TAP from the kernel side leave the stack answering.
"""

from __future__ import annotations

import asyncio
import subprocess
import textwrap

import pytest

from anp_async import Stack, StackConfig
from anp_async.nic.pcap import PcapNic
from tests.netutil import KERNEL_IP, STACK_CIDR, STACK_IP, STACK_MAC, TAP_NAME
from tests.stackutil import (
    ALL_MODES,
    MODE_PARAMS,
    arping_received,
    fast_tcp,
    ping_received,
    ping_rtts,
    run_in_ns,
)


def stack_on(tap, mode: str = "interrupt", **kw) -> Stack:  # type: ignore[no-untyped-def]
    return Stack(
        StackConfig(
            nic=tap,
            ip=STACK_CIDR,
            mac=STACK_MAC.hex(":"),
            mode=mode,
            mode_params=MODE_PARAMS[mode],
            tcp=fast_tcp(),
            **kw,
        )
    )


@pytest.mark.parametrize("mode", ALL_MODES)
async def test_kernel_arping_and_ping(tap_pair, mode: str) -> None:
    ns, tap = tap_pair
    async with stack_on(tap, mode) as stack:
        rc, out, err = await run_in_ns(
            ns, ["arping", "-c", "5", "-w", "10", "-I", TAP_NAME, STACK_IP]
        )
        assert arping_received(out) == 5, out + err
        rc, out, err = await run_in_ns(ns, ["ping", "-c", "100", "-i", "0.01", "-W", "1", STACK_IP])
        assert ping_received(out) == 100, out + err
        assert rc == 0
        rtts = ping_rtts(out)
        assert rtts is not None and rtts[0] <= rtts[1] <= rtts[2]
        print(
            f"{mode}: kernel ping -c 100 -i 0.01 rtt min/avg/max = "
            f"{rtts[0]:.3f}/{rtts[1]:.3f}/{rtts[2]:.3f} ms"
        )
        st = stack.stats()
        assert st["icmp"]["echo_replies_sent"] == 100
        assert st["arp"]["replies_sent"] >= 5
        assert st["mode"]["frames"] >= 105


async def test_stack_pings_kernel(tap_pair) -> None:
    _ns, tap = tap_pair
    async with stack_on(tap) as stack:
        rtts = [await stack.ping(KERNEL_IP, timeout=2) for _ in range(10)]
        assert all(0 < r < 2 for r in rtts)
        assert stack.stats()["icmp"]["echo_replies"] == 10


UDP_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    ok = 0
    for i in range(50):
        payload = bytes([i]) * (i * 29 + 1)
        s.sendto(payload, ("10.0.0.2", 7))
        data, addr = s.recvfrom(65535)
        assert data == payload and addr == ("10.0.0.2", 7), (data[:10], addr)
        ok += 1
    big = bytes(range(256)) * 100
    s.sendto(big, ("10.0.0.2", 7))
    assert s.recvfrom(65535)[0] == big
    print("echoed", ok + 1)
""")


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
        self.transport.sendto(data, addr)


@pytest.mark.parametrize("mode", ALL_MODES)
async def test_kernel_udp_echo(tap_pair, mode: str) -> None:
    ns, tap = tap_pair
    async with stack_on(tap, mode) as stack:
        await stack.create_datagram_endpoint(Echo, local_addr=(STACK_IP, 7))
        rc, out, err = await run_in_ns(ns, ["python3", "-c", UDP_CLIENT])
        assert rc == 0 and "echoed 51" in out, out + err


async def test_mode_switch_mid_ping_loses_nothing(tap_pair) -> None:
    ns, tap = tap_pair
    async with stack_on(tap) as stack:
        ping = asyncio.create_task(
            run_in_ns(ns, ["ping", "-c", "300", "-i", "0.005", "-W", "1", STACK_IP])
        )
        modes = ["coalesce", "poll", "adaptive", "interrupt"]
        i = 0
        while not ping.done():
            stack.set_mode(modes[i % 4], **MODE_PARAMS[modes[i % 4]])
            i += 1
            await asyncio.sleep(0.05)
        rc, out, err = await ping
        assert ping_received(out) == 300, out + err
        assert i >= 8  # really switched many times during the run


async def test_pcap_of_a_ping_run_decodes_in_tshark(tap_pair, tmp_path) -> None:
    ns, tap = tap_pair
    path = tmp_path / "run.pcap"
    async with stack_on(tap, pcap=str(path)):
        rc, out, err = await run_in_ns(ns, ["ping", "-c", "5", "-i", "0.02", STACK_IP])
        assert ping_received(out) == 5
    res = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "icmp.type", "-e", "arp.opcode"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    lines = [line.strip() for line in res.stdout.splitlines()]
    assert sum(1 for line in lines if line == "8") == 5  # echo requests in
    assert sum(1 for line in lines if line == "0") == 5  # echo replies out
    assert any(line == "2" or line == "1" for line in lines)  # ARP in or out
    assert PcapNic  # the stack wrapped the TAP in PcapNic for this run


MALFORMED_SENDER = textwrap.dedent("""
    import os, random, socket, struct, sys
    rnd = random.Random(1234)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("anptap0", 0))
    dst = bytes.fromhex("020000000002")
    src = s.getsockname()[4]
    eth_ip = dst + src + b"\\x08\\x00"
    def ipv4(proto, payload, total=None, ihl=5, csum=None, ver=4, flags_frag=0x4000):
        total = 20 + len(payload) if total is None else total
        hdr = struct.pack("!BBHHHBBH4s4s", (ver << 4) | ihl, 0, total, 1, flags_frag, 64, proto, 0,
                          socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"))
        if csum is None:
            s_ = sum(struct.unpack("!10H", hdr)); s_ = (s_ & 0xffff) + (s_ >> 16); s_ = (s_ & 0xffff) + (s_ >> 16)
            csum = ~s_ & 0xffff
        return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + payload
    frames = []
    # (AF_PACKET refuses frames under 14 bytes: truncated Ethernet is a unit test.)
    frames.append(eth_ip)                                        # Ethernet header, no IPv4
    frames.append(eth_ip + b"\\x45\\x00")                        # truncated IPv4
    frames.append(eth_ip + ipv4(1, b"\\x08\\x00" + b"x" * 30, total=500))  # total length too long
    frames.append(eth_ip + ipv4(1, b"\\x08\\x00" + b"x" * 30, ihl=3))     # IHL too small
    frames.append(eth_ip + ipv4(1, b"\\x08\\x00" + b"x" * 30, csum=0x1234)) # bad IP checksum
    frames.append(eth_ip + ipv4(1, b"\\x08\\x00\\x00\\x00" + b"x" * 30))   # bad ICMP checksum
    frames.append(eth_ip + ipv4(1, b"\\x08\\x00\\x00\\x00" + b"x" * 30, ver=6))  # wrong version
    frames.append(eth_ip + ipv4(17, b"\\x00\\x07\\x00\\x07\\x00\\x02\\x00\\x00"))  # UDP length < 8
    frames.append(eth_ip + ipv4(17, b"\\x00\\x07\\x00\\x07\\x00\\x20\\x12\\x34" + b"y" * 24))  # UDP bad csum
    frames.append(eth_ip + ipv4(6, b"\\x00" * 12 + b"\\xf0\\x02" + b"\\x00" * 6))   # TCP offset past end
    frames.append(eth_ip + ipv4(6, b"\\x00" * 10))                  # TCP truncated
    frames.append(eth_ip + ipv4(1, b"\\x08\\x00" + b"x" * 30, flags_frag=0x2001))  # fragment, never completed
    frames.append(dst + src + b"\\x08\\x06" + b"\\x00\\x01\\x08\\x00\\x06")         # truncated ARP
    frames.append(dst + src + b"\\x08\\x06" + b"\\x00\\x02\\x08\\x00\\x06\\x04" + b"\\x00" * 22)  # ARP wrong htype
    frames.append(dst + src + b"\\x88\\xb5" + b"z" * 50)           # unknown EtherType
    for _ in range(300):                                             # random bytes, random lengths
        frames.append(dst + src + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(2, 200))))
        frames.append(eth_ip + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 200))))
    for f in frames:
        s.send(f)
    print("sent", len(frames))
""")


@pytest.mark.parametrize("mode", ["interrupt", "adaptive"])
async def test_malformed_frames_leave_the_stack_answering(tap_pair, mode: str) -> None:
    ns, tap = tap_pair
    async with stack_on(tap, mode) as stack:
        rc, out, err = await run_in_ns(ns, ["ping", "-c", "3", "-i", "0.05", STACK_IP])
        assert ping_received(out) == 3
        rc, out, err = await run_in_ns(ns, ["python3", "-c", MALFORMED_SENDER])
        assert rc == 0 and out.startswith("sent"), out + err
        n_sent = int(out.split()[1])
        await asyncio.sleep(0.2)
        rc, out, err = await run_in_ns(ns, ["ping", "-c", "20", "-i", "0.01", STACK_IP])
        assert ping_received(out) == 20, out + err
        st = stack.stats()
        dropped = (
            sum(v for k, v in st["eth"].items() if k not in ("rx_frames",))
            + sum(
                v
                for k, v in st["ip"].items()
                if k not in ("rx_packets", "tx_packets", "reassembled", "fragmented")
            )
            + sum(v for k, v in st["icmp"].items() if "bad" in k or "trunc" in k)
            + sum(v for k, v in st["udp"].items() if "bad" in k or "trunc" in k)
            + sum(
                v
                for k, v in st["tcp"].items()
                if isinstance(v, int) and ("bad" in k or "trunc" in k)
            )
        )
        assert dropped >= 14, st  # every crafted malformation was counted somewhere
        assert st["mode"]["frames"] >= n_sent
        assert st["ip"]["ip_bad_checksum"] >= 1
        assert st["eth"]["unknown_ethertype"] >= 1
