"""TAP devices and namespaces against the real kernel (root; everything in a fresh netns)."""

from __future__ import annotations

import asyncio
import os
import select
import struct
import subprocess
import time
from collections.abc import Callable

import pytest

from anp_async.nic.netns import Netns, created_namespaces, loopback_up, unique_name, veth_pair
from anp_async.nic.tap import VNET_HDR_LEN, TapNic
from tests.netutil import KERNEL_CIDR, KERNEL_IP, STACK_IP, STACK_MAC, TAP_NAME

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806


def ip4(s: str) -> bytes:
    return bytes(int(x) for x in s.split("."))


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def wait_frame(nic: TapNic, match: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
    """Read frames until one matches; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        select.select([nic.fileno()], [], [], left)
        for f in nic.recv_batch(64):
            if match(f):
                return f
    raise AssertionError("no matching frame from the kernel")


def is_arp_request_for(ip: str) -> Callable[[bytes], bool]:
    def match(f: bytes) -> bool:
        return (
            len(f) >= 42
            and struct.unpack_from("!H", f, 12)[0] == ETH_P_ARP
            and struct.unpack_from("!H", f, 20)[0] == 1
            and f[38:42] == ip4(ip)
        )

    return match


def is_echo_request_to(ip: str) -> Callable[[bytes], bool]:
    def match(f: bytes) -> bool:
        return (
            len(f) >= 42
            and struct.unpack_from("!H", f, 12)[0] == ETH_P_IP
            and f[23] == 1  # ICMP
            and f[30:34] == ip4(ip)
            and f[14 + (f[14] & 0x0F) * 4] == 8  # echo request
        )

    return match


def arp_reply(request: bytes) -> bytes:
    kernel_mac, kernel_ip = request[22:28], request[28:32]
    eth = kernel_mac + STACK_MAC + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 2)
    return eth + arp + STACK_MAC + ip4(STACK_IP) + kernel_mac + kernel_ip


def echo_reply(request: bytes) -> list[bytes]:
    """The reply to an ICMP echo request, as scatter-gather parts."""
    ihl = (request[14] & 0x0F) * 4
    ip_hdr = bytearray(request[14 : 14 + ihl])
    ip_hdr[12:16], ip_hdr[16:20] = request[30:34], request[26:30]
    ip_hdr[10:12] = b"\x00\x00"
    ip_hdr[10:12] = struct.pack("!H", checksum(bytes(ip_hdr)))
    icmp = bytearray(request[14 + ihl :])
    icmp[0], icmp[2:4] = 0, b"\x00\x00"
    icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
    eth = request[6:12] + request[0:6] + request[12:14]
    return [eth, bytes(ip_hdr), memoryview(icmp)]


def netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_tap_lives_in_the_namespace_with_kernel_address(tap_pair: tuple[Netns, TapNic]) -> None:
    ns, tap = tap_pair
    assert (tap.name, tap.peer, tap.netns_name, tap.mtu) == (TAP_NAME, KERNEL_CIDR, ns.name, 1500)
    out = ns.run(["ip", "-o", "-4", "addr", "show", "dev", TAP_NAME], check=True).stdout
    assert f"inet {KERNEL_CIDR}" in out
    link = ns.run(["ip", "-o", "link", "show", TAP_NAME], check=True).stdout
    assert "UP" in link and "mtu 1500" in link
    assert tap.kernel_mac.hex(":") in link
    v6 = ns.run(["sysctl", "-n", f"net.ipv6.conf.{TAP_NAME}.disable_ipv6"], check=True).stdout
    assert v6.strip() == "1"
    # Not in the root namespace.
    root = subprocess.run(["ip", "link", "show", TAP_NAME], capture_output=True, check=False)
    assert root.returncode != 0
    assert tap.recv_batch() == []


def test_kernel_ping_round_trip_through_the_tap(tap_pair: tuple[Netns, TapNic]) -> None:
    ns, tap = tap_pair
    ping = ns.popen(
        ["ping", "-c", "1", "-W", "5", STACK_IP], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        request = wait_frame(tap, is_arp_request_for(STACK_IP))
        assert request[6:12] == tap.kernel_mac and request[28:32] == ip4(KERNEL_IP)
        tap.send([arp_reply(request)])
        echo = wait_frame(tap, is_echo_request_to(STACK_IP))
        assert echo[0:6] == STACK_MAC and echo[26:30] == ip4(KERNEL_IP)
        tap.send(echo_reply(echo))
        out, err = ping.communicate(timeout=10)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    assert ping.returncode == 0, (out, err)
    assert b"1 received" in out
    assert tap.stats.tx_frames == 2 and tap.stats.rx_frames >= 2
    assert tap.stats.tx_errors == tap.stats.tx_dropped == 0
    neigh = ns.run(["ip", "neigh", "show", STACK_IP], check=True).stdout
    assert STACK_MAC.hex(":") in neigh


async def test_tap_fd_drives_add_reader(tap_pair: tuple[Netns, TapNic]) -> None:
    ns, tap = tap_pair
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    def on_readable() -> None:
        for f in tap.recv_batch(8):
            if is_arp_request_for(STACK_IP)(f) and not got.done():
                got.set_result(f)

    loop.add_reader(tap.fileno(), on_readable)
    arping = ns.popen(
        ["arping", "-c", "1", "-w", "2", "-I", TAP_NAME, STACK_IP],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        frame = await asyncio.wait_for(got, 5)
    finally:
        loop.remove_reader(tap.fileno())
        arping.kill()
        arping.wait()
    assert frame[0:6] == b"\xff" * 6


def test_close_removes_the_device_and_namespace_goes_away() -> None:
    ns = Netns.create()
    try:
        tap = TapNic.open("anptapx", peer="10.0.0.1/24", netns=ns.name, mtu=1400)
        assert "mtu 1400" in ns.run(["ip", "link", "show", "anptapx"], check=True).stdout
        tap.close()
        tap.close()  # idempotent
        assert ns.run(["ip", "link", "show", "anptapx"]).returncode != 0
        tap.send([b"x" * 60])
        assert tap.stats.tx_dropped == 1
    finally:
        ns.delete()
    assert (
        ns.name
        not in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert ns.name not in created_namespaces()


def test_second_open_of_a_busy_tap_is_refused(tap_pair: tuple[Netns, TapNic]) -> None:
    ns, _ = tap_pair
    with pytest.raises(OSError, match="already open"):
        TapNic.open(TAP_NAME, netns=ns)
    with pytest.raises(ValueError):
        TapNic.open("a-name-that-is-too-long", netns=ns)


def test_vnet_hdr_prefixes_frames(netns: Netns) -> None:
    with TapNic.open("anpvnet0", peer=KERNEL_CIDR, netns=netns, vnet_hdr=True) as tap:
        arping = netns.popen(
            ["arping", "-c", "1", "-w", "2", "-I", "anpvnet0", STACK_IP],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            f = wait_frame(tap, lambda f: is_arp_request_for(STACK_IP)(f[VNET_HDR_LEN:]))
        finally:
            arping.kill()
            arping.wait()
        assert f[:VNET_HDR_LEN] == bytes(VNET_HDR_LEN)  # no offload on a small ARP frame


def test_netns_create_run_enter_delete() -> None:
    name = unique_name()
    assert name.startswith("anp-") and len(name) == 12
    outside = netns_inode()
    with Netns.create(name) as ns:
        assert ns.exists() and name in created_namespaces()
        with pytest.raises(FileExistsError, match="already exists"):
            Netns.create(name)
        assert "lo" in ns.run(["ip", "-o", "link"]).stdout
        loopback_up(ns)
        assert ns.run(["ping", "-c", "1", "-W", "2", "127.0.0.1"]).returncode == 0
        with ns.enter():
            inside = netns_inode()
            assert inside != outside
            assert os.listdir("/sys/class/net") is not None
        assert netns_inode() == outside
        assert os.stat(ns.path).st_ino == inside
    assert not ns.exists()
    ns.delete()  # idempotent


def test_netns_enter_restores_on_exception_and_exit_deletes() -> None:
    outside = netns_inode()
    with pytest.raises(RuntimeError), Netns.create() as ns:
        with ns.enter():
            raise RuntimeError("boom")
    assert netns_inode() == outside
    assert not ns.exists()
    with pytest.raises(FileNotFoundError, match="does not exist"), ns.enter():
        pass


def test_netns_delete_kills_processes_left_inside(netns: Netns) -> None:
    sleeper = netns.popen(["sleep", "30"])
    deadline = time.monotonic() + 5
    while sleeper.pid not in netns.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sleeper.pid in netns.pids()
    netns.delete()
    assert sleeper.wait(timeout=5) != 0
    assert not netns.exists()


def test_veth_pair_between_two_namespaces() -> None:
    with Netns.create() as a, Netns.create() as b:
        veth_pair(a, b, mtu=9000)
        assert "10.0.1.1/24" in a.run(["ip", "-o", "addr", "show", "veth-a"], check=True).stdout
        assert "mtu 9000" in b.run(["ip", "link", "show", "veth-b"], check=True).stdout
        res = a.run(["ping", "-c", "1", "-W", "2", "10.0.1.2"])
        assert res.returncode == 0, res.stdout + res.stderr
        root = subprocess.run(["ip", "link", "show", "veth-a"], capture_output=True, check=False)
        assert root.returncode != 0
