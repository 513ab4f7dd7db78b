"""ARP packet format and the neighbour table, driven at explicit times."""

import math

import pytest
from scapy.layers.l2 import ARP

from anp_async.proto.arp import (
    OP_REPLY,
    OP_REQUEST,
    ArpPacket,
    ArpTable,
    build_arp,
    parse_arp,
)
from anp_async.proto.errors import ParseError
from anp_async.proto.ethernet import BROADCAST_MAC, ZERO_MAC

MY_IP = bytes([10, 0, 0, 2])
MY_MAC = bytes.fromhex("020000000002")
PEER_IP = bytes([10, 0, 0, 1])
PEER_MAC = bytes.fromhex("020000000001")
OTHER_IP = bytes([10, 0, 0, 3])
OTHER_MAC = bytes.fromhex("020000000003")


def request(sender_mac, sender_ip, target_ip):
    return ArpPacket(OP_REQUEST, sender_mac, sender_ip, ZERO_MAC, target_ip)


def reply(sender_mac, sender_ip, target_mac=MY_MAC, target_ip=MY_IP):
    return ArpPacket(OP_REPLY, sender_mac, sender_ip, target_mac, target_ip)


# -- format ------------------------------------------------------------------------------


def test_build_parse_round_trip_and_scapy():
    pkt = ArpPacket(OP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, MY_IP)
    raw = build_arp(pkt)
    assert len(raw) == 28
    assert parse_arp(raw) == pkt
    ref = ARP(
        op=1, hwsrc="02:00:00:00:00:01", psrc="10.0.0.1", hwdst="00:00:00:00:00:00", pdst="10.0.0.2"
    )
    assert raw == bytes(ref)
    # Ethernet padding after the 28 bytes is ignored
    assert parse_arp(memoryview(raw + b"\x00" * 18)) == pkt


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (1, 6, "arp_bad_htype"),
        (2, 0x86, "arp_bad_ptype"),
        (4, 8, "arp_bad_len"),
        (5, 16, "arp_bad_len"),
        (7, 3, "arp_bad_op"),
    ],
)
def test_parse_rejects(offset, value, reason):
    raw = bytearray(build_arp(reply(PEER_MAC, PEER_IP)))
    raw[offset] = value
    with pytest.raises(ParseError) as exc:
        parse_arp(raw)
    assert exc.value.reason == reason


def test_parse_truncated():
    raw = build_arp(reply(PEER_MAC, PEER_IP))
    for n in range(28):
        with pytest.raises(ParseError) as exc:
            parse_arp(raw[:n])
        assert exc.value.reason == "arp_truncated"


# -- table -------------------------------------------------------------------------------


def table(**kw):
    return ArpTable(MY_IP, MY_MAC, **kw)


def test_reply_to_request_for_my_ip_and_learn_sender():
    t = table()
    frames, released = t.on_arp(request(PEER_MAC, PEER_IP, MY_IP), now=5.0)
    assert released == []
    assert len(frames) == 1
    dst, payload = frames[0]
    assert dst == PEER_MAC
    assert parse_arp(payload) == ArpPacket(OP_REPLY, MY_MAC, MY_IP, PEER_MAC, PEER_IP)
    assert t.lookup(PEER_IP, 5.0) == PEER_MAC  # RFC 826: the requester is learned
    assert t.counters["requests_received"] == 1 and t.counters["replies_sent"] == 1


def test_request_for_other_host_neither_answered_nor_learned():
    t = table()
    frames, released = t.on_arp(request(PEER_MAC, PEER_IP, OTHER_IP), now=0.0)
    assert frames == [] and released == []
    assert t.lookup(PEER_IP, 0.0) is None
    assert t.entries() == []


def test_gratuitous_arp_updates_existing_entry_only():
    t = table()
    t.on_arp(request(PEER_MAC, PEER_IP, MY_IP), now=0.0)
    new_mac = bytes.fromhex("0200000000ff")
    # gratuitous: sender == target, broadcast request
    frames, _ = t.on_arp(request(new_mac, PEER_IP, PEER_IP), now=10.0)
    assert frames == []
    assert t.lookup(PEER_IP, 10.0) == new_mac
    assert t.counters["entries_updated"] == 1
    # the merge refreshed the lifetime: still valid at 10 + ttl - epsilon
    assert t.lookup(PEER_IP, 69.9) == new_mac
    # a gratuitous ARP from an unknown host creates nothing (RFC 826 merge rule)
    t.on_arp(request(OTHER_MAC, OTHER_IP, OTHER_IP), now=11.0)
    assert t.lookup(OTHER_IP, 11.0) is None


def test_resolve_sends_one_request_then_reply_releases_in_order():
    t = table()
    frames = t.resolve(PEER_IP, "p1", now=0.0)
    assert len(frames) == 1
    dst, payload = frames[0]
    assert dst == BROADCAST_MAC
    assert parse_arp(payload) == ArpPacket(OP_REQUEST, MY_MAC, MY_IP, ZERO_MAC, PEER_IP)
    assert t.resolve(PEER_IP, "p2", now=0.1) == []  # request already outstanding
    assert t.next_deadline() == 1.0
    frames, released = t.on_arp(reply(PEER_MAC, PEER_IP), now=0.2)
    assert frames == []
    assert released == [(PEER_MAC, "p1"), (PEER_MAC, "p2")]
    assert t.lookup(PEER_IP, 0.2) == PEER_MAC
    assert t.pending() == []
    assert t.poll(5.0) == ([], [])  # nothing retransmitted after the answer
    assert t.counters["released"] == 2


def test_any_arp_from_pending_address_completes_resolution():
    t = table()
    t.resolve(PEER_IP, "p", now=0.0)
    # a gratuitous announcement (not addressed to us) from the address being resolved
    _, released = t.on_arp(request(PEER_MAC, PEER_IP, PEER_IP), now=0.5)
    assert released == [(PEER_MAC, "p")]
    assert t.lookup(PEER_IP, 0.5) == PEER_MAC


def test_hold_queue_bounded_drops_oldest():
    t = table(hold_per_ip=2)
    t.resolve(PEER_IP, 1, now=0.0)
    t.resolve(PEER_IP, 2, now=0.0)
    t.resolve(PEER_IP, 3, now=0.0)
    assert t.pending() == [(PEER_IP, 2)]
    assert t.counters["hold_dropped"] == 1
    _, released = t.on_arp(reply(PEER_MAC, PEER_IP), now=0.1)
    assert [p for _, p in released] == [2, 3]


def test_retries_then_give_up():
    t = table(retry_interval=1.0, max_retries=2)
    assert len(t.resolve(PEER_IP, "a", now=0.0)) == 1
    t.resolve(PEER_IP, "b", now=0.2)
    assert t.poll(0.5) == ([], [])
    frames, failed = t.poll(1.0)
    assert [parse_arp(p).target_ip for _, p in frames] == [PEER_IP] and failed == []
    assert t.next_deadline() == 2.0
    frames, failed = t.poll(2.0)
    assert len(frames) == 1 and failed == []
    frames, failed = t.poll(3.0)
    assert frames == []
    assert failed == [(PEER_IP, ["a", "b"])]
    assert t.counters["requests_sent"] == 3  # 1 + max_retries
    assert t.counters["resolve_failed"] == 1
    assert t.next_deadline() is None
    # a later packet starts a fresh resolution
    assert len(t.resolve(PEER_IP, "c", now=10.0)) == 1


def test_entries_expire():
    t = table(ttl=10.0)
    t.on_arp(request(PEER_MAC, PEER_IP, MY_IP), now=0.0)
    assert t.lookup(PEER_IP, 9.99) == PEER_MAC
    assert t.lookup(PEER_IP, 10.0) is None  # expired is a miss
    assert t.next_deadline() == 10.0  # purge time
    t.poll(10.0)
    assert t.entries() == []
    assert t.counters["entries_expired"] == 1
    assert t.next_deadline() is None


def test_static_entry_is_permanent_and_not_overwritten():
    t = table(ttl=1.0)
    t.add_static(PEER_IP, PEER_MAC)
    t.on_arp(request(OTHER_MAC, PEER_IP, MY_IP), now=0.0)
    assert t.lookup(PEER_IP, 1e9) == PEER_MAC
    (entry,) = t.entries()
    assert entry.static and entry.expires == math.inf
    t.poll(1e9)
    assert t.lookup(PEER_IP, 1e9) == PEER_MAC
    assert t.remove(PEER_IP) and t.lookup(PEER_IP, 0.0) is None


def test_own_looped_back_and_conflicting_packets_are_ignored():
    t = table()
    frames, _ = t.on_arp(request(MY_MAC, MY_IP, MY_IP), now=0.0)
    assert frames == [] and t.counters["own_ignored"] == 1
    frames, _ = t.on_arp(request(PEER_MAC, MY_IP, MY_IP), now=0.0)
    assert frames == [] and t.counters["conflicts"] == 1
    assert t.entries() == []


def test_probe_is_answered_but_not_learned():
    # RFC 5227 probe: sender IP 0.0.0.0 asking for our address
    t = table()
    frames, _ = t.on_arp(request(PEER_MAC, b"\x00" * 4, MY_IP), now=0.0)
    assert len(frames) == 1 and frames[0][0] == PEER_MAC
    assert parse_arp(frames[0][1]).target_ip == b"\x00" * 4
    assert t.entries() == []


def test_pending_ips_bounded_refusal_reported_by_poll():
    t = table(max_pending_ips=1)
    assert len(t.resolve(PEER_IP, "x", now=0.0)) == 1
    assert t.resolve(OTHER_IP, "y", now=0.3) == []
    assert t.counters["pending_full"] == 1
    assert t.next_deadline() == 0.3
    frames, failed = t.poll(0.3)
    assert frames == [] and failed == [(OTHER_IP, ["y"])]
    assert t.pending() == [(PEER_IP, 1)]


def test_max_entries_evicts_soonest_expiring():
    t = table(max_entries=2, ttl=100.0)
    for i, now in ((1, 0.0), (3, 1.0), (4, 2.0)):
        t.on_arp(request(bytes([2, 0, 0, 0, 0, i]), bytes([10, 0, 0, i]), MY_IP), now=now)
    assert len(t.entries()) == 2
    assert t.lookup(bytes([10, 0, 0, 1]), 2.0) is None  # the oldest went
    assert t.lookup(bytes([10, 0, 0, 4]), 2.0) is not None
    assert t.counters["entries_evicted"] == 1


def test_hold_per_ip_zero_still_resolves():
    t = table(hold_per_ip=0)
    assert len(t.resolve(PEER_IP, "p", now=0.0)) == 1
    assert t.counters["hold_dropped"] == 1
    assert t.on_arp(reply(PEER_MAC, PEER_IP), now=0.1)[1] == []
    assert t.lookup(PEER_IP, 0.1) == PEER_MAC
