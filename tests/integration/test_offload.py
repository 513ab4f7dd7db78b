"""Offloads through the TAP's virtio-net header against the Linux kernel.

With ``vnet_hdr=True`` the kernel hands the stack 64 KiB TCP frames with partial checksums
(GSO) and takes 64 KiB super-segments from it, cutting them at the MSS itself (TSO). Each
receive mode moves 50 MiB each way, checked by sha256, and the counters must show that
super-segments really went both ways. UDP and ICMP (checksums the kernel may leave
partial, or fills in) and a pcap capture (written without the virtio-net header) too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from collections.abc import Iterator

import pytest

from anp_async import Stack, StackConfig
from anp_async.nic.faults import FaultConfig, FaultyNic
from anp_async.nic.netns import Netns
from anp_async.nic.tap import TapNic
from tests.netutil import KERNEL_CIDR, KERNEL_IP, STACK_CIDR, STACK_IP, STACK_MAC
from tests.stackutil import ALL_MODES, MODE_PARAMS, fast_tcp, run_in_ns

PEER = os.path.join(os.path.dirname(__file__), "..", "kernel_peer.py")
MiB = 1024 * 1024
TAP = "anpoff0"


@pytest.fixture
def vnet_tap(netns: Netns) -> Iterator[tuple[Netns, TapNic]]:
    tap = TapNic.open(TAP, peer=KERNEL_CIDR, netns=netns, vnet_hdr=True)
    try:
        yield netns, tap
    finally:
        tap.close()


def stack_on(tap: TapNic, mode: str = "interrupt", pcap: str | None = None) -> Stack:
    return Stack(
        StackConfig(
            nic=tap,
            ip=STACK_CIDR,
            mac=STACK_MAC.hex(":"),
            mode=mode,
            mode_params=MODE_PARAMS[mode],
            tcp=fast_tcp(),
            pcap=pcap,
        )
    )


def seeded(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


async def kernel_peer(ns: Netns, *args: object) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.name, "python3", PEER, *map(str, args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 10)
    assert b"listening" in line, line
    return proc


async def peer_result(proc: asyncio.subprocess.Process) -> dict:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


async def stack_sends(stack: Stack, ns: Netns, port: int, data: bytes) -> None:
    proc = await kernel_peer(ns, "serve-sink", port)
    _r, w = await stack.open_connection(KERNEL_IP, port)
    w.write(data)
    await w.drain()
    w.close()
    await w.wait_closed()
    res = await peer_result(proc)
    assert res == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


async def stack_receives(stack: Stack, ns: Netns, port: int, n: int, seed: int) -> None:
    proc = await kernel_peer(ns, "serve-source", port, n, seed)
    r, w = await stack.open_connection(KERNEL_IP, port)
    h = hashlib.sha256()
    total = 0
    while chunk := await r.read(1 << 20):
        h.update(chunk)
        total += len(chunk)
    w.close()
    await peer_result(proc)
    assert total == n
    assert h.hexdigest() == hashlib.sha256(seeded(n, seed)).hexdigest()


@pytest.mark.parametrize("mode", ALL_MODES)
async def test_50_mib_each_way_with_offload(vnet_tap: tuple[Netns, TapNic], mode: str) -> None:
    ns, tap = vnet_tap
    n = 50 * MiB
    data = seeded(n, 1)
    async with stack_on(tap, mode) as stack:
        t0 = time.perf_counter()
        await stack_sends(stack, ns, 5001, data)
        t1 = time.perf_counter()
        await stack_receives(stack, ns, 5002, n, 2)
        t2 = time.perf_counter()
        stats = stack.stats()
        print(
            f"{mode}: 50 MiB with offload: stack->kernel {t1 - t0:.2f}s, "
            f"kernel->stack {t2 - t1:.2f}s"
        )
        # The kernel's end took every frame we wrote (a bad virtio-net header is an error).
        rc, out, _ = await run_in_ns(ns, ["cat", f"/sys/class/net/{TAP}/statistics/rx_errors"])
        assert rc == 0 and out.strip() == "0"
    assert stats["offload"]["vnet_hdr"] is True
    # Super-segments went out (the kernel cut them) and came in (the kernel never cut them).
    assert stats["tcp"]["tso_segments_sent"] > 100
    assert stats["offload"]["gso_frames_received"] > 100
    # No frame was refused on the way: nothing dropped by the driver or malformed.
    assert stats["nic"]["tx_dropped"] == 0 and stats["nic"]["tx_errors"] == 0
    assert stats["tcp"].get("tcp_bad_checksum", 0) == 0


async def test_udp_icmp_and_small_tcp_with_offload(vnet_tap: tuple[Netns, TapNic]) -> None:
    ns, tap = vnet_tap
    async with stack_on(tap) as stack:
        rtt = await stack.ping(KERNEL_IP)
        assert 0 < rtt < 1
        rc, out, err = await run_in_ns(ns, ["ping", "-c", "3", "-i", "0.2", "-W", "1", STACK_IP])
        assert rc == 0, out + err

        # UDP from the kernel: its checksum may arrive partial (NEEDS_CSUM), which the
        # stack must not count as bad.
        got: asyncio.Queue[bytes] = asyncio.Queue()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                got.put_nowait(data)
                self.t.sendto(data, addr)  # type: ignore[attr-defined]

        await stack.create_datagram_endpoint(Echo, local_addr=(STACK_IP, 7007))
        rc, out, err = await run_in_ns(
            ns, ["sh", "-c", f"printf 'offload udp' | nc -u -w 1 {STACK_IP} 7007"]
        )
        assert (await asyncio.wait_for(got.get(), 5)) == b"offload udp"
        assert out == "offload udp", (rc, out, err)
        assert stack.stats()["udp"].get("udp_bad_checksum", 0) == 0

        # A small TCP exchange: partial checksums both ways, no super-segments needed.
        proc = await kernel_peer(ns, "serve-echo", 7100, 1)
        r, w = await stack.open_connection(KERNEL_IP, 7100)
        w.write(b"ping over tcp")
        w.write_eof()
        assert await r.read(-1) == b"ping over tcp"
        w.close()
        assert (await peer_result(proc))["served"] == 1


async def test_pcap_leaves_out_the_vnet_header(vnet_tap: tuple[Netns, TapNic], tmp_path) -> None:
    ns, tap = vnet_tap
    path = str(tmp_path / "offload.pcap")
    async with stack_on(tap, pcap=path) as stack:
        await stack.ping(KERNEL_IP)
        await stack_sends(stack, ns, 5003, seeded(2 * MiB, 3))
        assert stack.stats()["tcp"]["tso_segments_sent"] > 0
    rc, out, err = await run_in_ns(
        ns, ["tshark", "-r", path, "-T", "fields", "-e", "frame.len", "-e", "_ws.col.Protocol"]
    )
    assert rc == 0, err
    rows = [line.split("\t") for line in out.splitlines() if line]
    protos = {p for _, p in rows}
    # Every frame decodes as Ethernet (ARP, ICMP, TCP): a leftover header would not.
    assert {"ICMP", "TCP"} <= protos, protos
    assert protos <= {"ARP", "ICMP", "TCP"}, protos
    assert max(int(n) for n, _ in rows) > 1514  # super-segments recorded whole


async def test_fault_injector_wraps_an_offloading_tap(vnet_tap: tuple[Netns, TapNic]) -> None:
    """Loss, duplication, reordering and corruption in front of a TAP with offloads:
    damaged frames are caught (never certified by the kernel's checksum offload) and the
    data arrives intact both ways."""
    ns, tap = vnet_tap
    faults = FaultConfig(loss=0.01, duplicate=0.01, reorder=0.01, corrupt=0.01, seed=5)
    nic = FaultyNic(tap, faults)
    assert nic.vnet_hdr
    n = 8 * MiB
    async with stack_on(nic) as stack:  # type: ignore[arg-type]
        await stack_sends(stack, ns, 5101, seeded(n, 3))
        await stack_receives(stack, ns, 5102, n, 4)
        injected = dict(nic.fault_stats)
        stats = stack.stats()
    assert stats["offload"]["vnet_hdr"] is True
    assert injected["corrupted"] > 0 and injected["dropped"] > 0, injected
    tcp = stats["tcp"]
    assert tcp.get("conn_retransmits", 0) + tcp.get("conn_fast_retransmits", 0) > 0, tcp
    # Frames damaged on receive were checked, not trusted: a checksum caught them.
    assert tcp.get("tcp_bad_checksum", 0) + stats["ip"].get("ip_bad_checksum", 0) > 0, stats
