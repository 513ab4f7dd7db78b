"""The floor benchmark's in-place echo reply and ARP reply (``anp_async.bench.tap_floor``):
what it writes back must be what the stack would send, checksum included."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from anp_async.bench.tap_floor import OUR_IP, OUR_MAC, arp_reply, echo_reply_in_place
from anp_async.proto import icmp
from anp_async.proto.ipv4 import build_ipv4_header, parse_ipv4

PEER_MAC = bytes.fromhex("0a0000000001")
PEER_IP = bytes([10, 0, 0, 1])


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=200))
@example(0, 0, b"")  # a reply of all zeros: its checksum is 0xFFFF, not the incremental -0
@example(0xF7FF, 0, b"")  # a reply whose data sums to 0xFFFF: checksum 0
def test_echo_reply_in_place_is_the_stacks_reply(ident: int, seq: int, payload: bytes) -> None:
    req = icmp.build_echo(icmp.ECHO_REQUEST, ident, seq, payload)
    ip = build_ipv4_header(PEER_IP, OUR_IP, 1, len(req), ident=7)
    frame = bytearray(OUR_MAC + PEER_MAC + b"\x08\x00" + ip + req)
    assert echo_reply_in_place(frame)
    assert frame[:12] == PEER_MAC + OUR_MAC
    hdr, body = parse_ipv4(frame[14:])
    assert (hdr.src, hdr.dst) == (OUR_IP, PEER_IP)
    msg = icmp.parse_icmp(body)  # verifies the checksum
    assert bytes(body) == icmp.build_echo_reply_from(icmp.parse_icmp(req))
    assert msg.type == icmp.ECHO_REPLY


def test_other_frames_are_left_alone_and_arp_is_answered() -> None:
    udp = bytearray(OUR_MAC + PEER_MAC + b"\x08\x00" + build_ipv4_header(PEER_IP, OUR_IP, 17, 8, 1) + bytes(8))
    assert not echo_reply_in_place(udp)
    req = (b"\xff" * 6 + PEER_MAC + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01"
           + PEER_MAC + PEER_IP + bytes(6) + OUR_IP)  # fmt: skip
    rep = arp_reply(req)
    assert rep is not None and rep[:6] == PEER_MAC and rep[20:22] == b"\x00\x02"
    assert rep[22:32] == OUR_MAC + OUR_IP and rep[32:42] == PEER_MAC + PEER_IP
    assert arp_reply(req[:38] + bytes([10, 0, 0, 9])) is None  # not for us
