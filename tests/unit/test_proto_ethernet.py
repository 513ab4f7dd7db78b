"""Ethernet header format and MAC helpers."""

import pytest
from scapy.layers.l2 import Dot1Q, Ether

from anp_async.proto.errors import ParseError
from anp_async.proto.ethernet import (
    BROADCAST_MAC,
    ETH_P_8021Q,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    HEADER_LEN,
    build_ethernet_header,
    is_multicast_mac,
    mac_to_bytes,
    mac_to_str,
    parse_ethernet,
)

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")


def test_constants():
    assert (ETH_P_IP, ETH_P_ARP, ETH_P_IPV6, HEADER_LEN) == (0x0800, 0x0806, 0x86DD, 14)
    assert BROADCAST_MAC == b"\xff" * 6


def test_round_trip_and_payload_is_a_view():
    frame = bytearray(build_ethernet_header(A, B, ETH_P_IP) + b"hello")
    dst, src, ethertype, payload = parse_ethernet(frame)
    assert (dst, src, ethertype) == (A, B, ETH_P_IP)
    assert isinstance(dst, bytes) and isinstance(src, bytes)
    assert isinstance(payload, memoryview) and payload.tobytes() == b"hello"
    frame[HEADER_LEN] = ord("j")  # a view, not a copy
    assert payload.tobytes() == b"jello"
    mv = memoryview(bytes(frame))
    assert parse_ethernet(mv)[3].obj is mv.obj


def test_matches_scapy():
    built = build_ethernet_header(A, BROADCAST_MAC, ETH_P_ARP)
    ref = bytes(Ether(dst="02:00:00:00:00:01", src="ff:ff:ff:ff:ff:ff", type=0x0806))
    assert built == ref[:14]
    vlan = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / Dot1Q(vlan=5))
    assert parse_ethernet(vlan)[2] == ETH_P_8021Q  # passed up as an unknown EtherType


def test_header_only_and_truncated():
    dst, src, et, payload = parse_ethernet(build_ethernet_header(A, B, 0x1234))
    assert (et, len(payload)) == (0x1234, 0)
    for n in range(HEADER_LEN):
        with pytest.raises(ParseError) as exc:
            parse_ethernet(bytes(n))
        assert exc.value.reason == "eth_truncated"


def test_mac_helpers():
    assert mac_to_bytes("02:00:00:aa:BB:cc") == bytes.fromhex("020000aabbcc")
    assert mac_to_bytes("02-00-00-aa-bb-cc") == bytes.fromhex("020000aabbcc")
    assert mac_to_bytes(A) == A
    assert mac_to_str(bytes.fromhex("020000aabbcc")) == "02:00:00:aa:bb:cc"
    assert mac_to_str(memoryview(A)) == "02:00:00:00:00:01"
    for bad in ["", "02:00:00:aa:bb", "02:00:00:aa:bb:cc:dd", "0g:00:00:00:00:00", "+1:0:0:0:0:0"]:
        with pytest.raises(ValueError):
            mac_to_bytes(bad)
    with pytest.raises(ValueError):
        mac_to_bytes(b"\x00" * 5)
    assert is_multicast_mac(BROADCAST_MAC) and is_multicast_mac(bytes.fromhex("01005e000001"))
    assert not is_multicast_mac(A)
