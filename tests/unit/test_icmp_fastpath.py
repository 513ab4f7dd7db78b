"""The ping fast path: ``icmp.predict_echo_request`` / ``icmp.echo_reply_for`` and the
stack's use of them (``Stack._rx_echo``), against the full layer-by-layer way."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anp_async import Stack, StackConfig
from anp_async.nic.wire import Wire
from anp_async.proto import icmp
from anp_async.proto.checksum import ones_sum
from anp_async.proto.ethernet import build_ethernet_header, mac_to_bytes
from anp_async.proto.ipv4 import build_ipv4_header, ip_to_bytes, parse_ipv4
from anp_async.proto.numbers import ETH_P_IP, IPPROTO_ICMP, IPPROTO_UDP
from anp_async.proto.udp import build_udp_header

MAC = mac_to_bytes("02:00:00:00:00:02")
PEER_MAC = mac_to_bytes("02:00:00:00:00:77")
IP = ip_to_bytes("10.0.0.2")
PEER = ip_to_bytes("10.0.0.1")


def request_frame(
    message: bytes | None = None, *, src: bytes = PEER, dst: bytes = IP, mac: bytes = MAC,
    frag: int = 0, proto: int = IPPROTO_ICMP, pad: int = 0,
) -> bytes:  # fmt: skip
    if message is None:
        message = icmp.build_echo(icmp.ECHO_REQUEST, 0x1234, 7, b"ping data " * 5)
    ip = bytearray(build_ipv4_header(src, dst, proto, len(message), 99))
    if frag:
        struct.pack_into("!H", ip, 6, frag)
        struct.pack_into("!H", ip, 10, 0)
        struct.pack_into("!H", ip, 10, ~ones_sum(bytes(ip)) & 0xFFFF)
    return build_ethernet_header(mac, PEER_MAC, ETH_P_IP) + bytes(ip) + message + bytes(pad)


def test_predicts_a_plain_echo_request() -> None:
    frame = request_frame(pad=10)  # Ethernet padding after the datagram is not the message's
    got = icmp.predict_echo_request(frame, 0, MAC, IP)
    assert got is not None
    src, message = got
    assert src == PEER and bytes(message) == frame[34:-10]
    # Behind a virtio-net header too, and with DF set (not a fragment).
    assert icmp.predict_echo_request(b"\0" * 10 + frame, 10, MAC, IP) is not None
    assert icmp.predict_echo_request(request_frame(frag=0x4000), 0, MAC, IP) is not None


def _bad_checksums() -> list[bytes]:
    good = request_frame()
    ip_sum, icmp_sum = bytearray(good), bytearray(good)
    ip_sum[24] ^= 1
    icmp_sum[36] ^= 1
    return [bytes(ip_sum), bytes(icmp_sum)]


@pytest.mark.parametrize(
    "frame",
    [
        request_frame(mac=PEER_MAC),  # another host's MAC
        request_frame(mac=b"\xff" * 6),  # broadcast: the full way decides
        request_frame(dst=PEER),  # another address
        request_frame(frag=0x2000),  # more fragments
        request_frame(frag=0x0010),  # a later fragment
        request_frame(proto=IPPROTO_UDP),
        request_frame(icmp.build_echo(icmp.ECHO_REPLY, 1, 1, b"x")),
        request_frame(icmp.build_icmp_header(icmp.ECHO_REQUEST, 1, 1, 1, b"")),  # code 1
        request_frame()[:-20],  # total length beyond the frame
        request_frame()[:40],  # shorter than the headers
        *_bad_checksums(),
    ],
)
def test_anything_else_takes_the_full_way(frame: bytes) -> None:
    assert icmp.predict_echo_request(frame, 0, MAC, IP) is None


def test_options_take_the_full_way() -> None:
    frame = bytearray(request_frame())
    frame[14] = 0x46  # IHL 6: the datagram has options
    assert icmp.predict_echo_request(bytes(frame), 0, MAC, IP) is None


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=200))
def test_reply_by_update_equals_the_reply_computed_whole(ident: int, seq: int, data: bytes) -> None:
    request = icmp.build_echo(icmp.ECHO_REQUEST, ident, seq, data)
    reply = icmp.echo_reply_for(request)
    assert reply == icmp.build_echo(icmp.ECHO_REPLY, ident, seq, data)
    assert ones_sum(reply) == 0xFFFF


@pytest.mark.parametrize(
    ("ident", "seq", "data"),
    [(0, 0, b""), (0, 0, bytes(64)), (0xFFFF, 0, b""), (0, 0, b"\xff\xff"), (0x7FFF, 0x8000, b"")],
)
def test_reply_checksum_corner_cases(ident: int, seq: int, data: bytes) -> None:
    # All zeros sums to +0 (checksum 0xffff); a non-zero multiple of 0xffff has checksum 0.
    request = icmp.build_echo(icmp.ECHO_REQUEST, ident, seq, data)
    assert icmp.echo_reply_for(request) == icmp.build_echo(icmp.ECHO_REPLY, ident, seq, data)


# -------------------------------------------------------------- the stack's two ways


def _drain(sock) -> list[bytes]:  # type: ignore[no-untyped-def]
    out = []
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        return out


async def _answers(fast: bool, frames: list[bytes], gateway: str | None = None) -> tuple:  # type: ignore[type-arg]
    """What a stack sends for ``frames`` (one receive batch) and its counters."""
    nic, peer = Wire.pair()
    cfg = StackConfig(nic=nic, ip="10.0.0.2/24", mac="02:00:00:00:00:02", gateway=gateway)
    async with Stack(cfg) as stack:
        stack.fast_path = fast
        full_way: list[int] = []
        full_rx_icmp = stack._rx_icmp
        stack._rx_icmp = lambda hdr, data: (full_way.append(1), full_rx_icmp(hdr, data))[1]  # type: ignore[method-assign]
        stack.arp.add_static(PEER, PEER_MAC)
        stack.arp.add_static(ip_to_bytes("10.0.0.254"), PEER_MAC)
        _drain(peer._sock)
        stack._rx_batch(frames)
        await asyncio.sleep(0)
        sent = _drain(peer._sock)
        counters = (dict(stack.eth_counters), dict(stack.ip_counters), dict(stack.icmp_counters))
        udp = dict(stack.udp.counters)
    return sent, counters + (udp,), len(full_way)


def _without_ip_id(frame: bytes) -> bytes:
    # The IP identification (and so the header checksum) is the stack's counter's.
    return frame[:18] + frame[20:24] + frame[26:]


async def test_fast_and_full_way_answer_alike() -> None:
    frames = [
        request_frame(),
        request_frame(icmp.build_echo(icmp.ECHO_REQUEST, 0, 0, b"")),
        request_frame(icmp.build_echo(icmp.ECHO_REQUEST, 0xFFFF, 9, bytes(1000))),
        request_frame(pad=8),
        *_bad_checksums(),  # dropped and counted by the full way in both
    ]
    fast, fast_counters, fast_parsed = await _answers(True, frames)
    full, full_counters, full_parsed = await _answers(False, frames)
    assert len(fast) == 4
    # On the fast path only the request with a bad ICMP checksum got as far as ICMP's
    # full parse (the bad IP header stops at IP on both ways).
    assert (fast_parsed, full_parsed) == (1, 5)
    assert [_without_ip_id(f) for f in fast] == [_without_ip_id(f) for f in full]
    assert fast_counters == full_counters
    for f in fast:
        hdr, message = parse_ipv4(f[14:])
        assert hdr.src == IP and hdr.dst == PEER and f[:6] == PEER_MAC
        assert icmp.parse_icmp(message).type == icmp.ECHO_REPLY


@pytest.mark.parametrize("fast", [True, False])
async def test_echo_from_off_link_without_a_gateway_is_counted_not_raised(fast: bool) -> None:
    # The request from 192.0.2.1 cannot be answered (no route); the frame after it still is.
    frames = [request_frame(src=ip_to_bytes("192.0.2.1")), request_frame()]
    sent, (_eth, _ip, icmp_c, _udp), _ = await _answers(fast, frames)
    assert len(sent) == 1
    assert icmp_c["echo_reply_no_route"] == 1 and icmp_c["echo_replies_sent"] == 1
    # With a gateway the same request is answered through it.
    sent, (_eth, _ip, icmp_c, _udp), _ = await _answers(fast, frames, gateway="10.0.0.254")
    assert len(sent) == 2 and "echo_reply_no_route" not in icmp_c


async def test_port_unreachable_to_off_link_without_a_gateway_is_counted_not_raised() -> None:
    stranger = ip_to_bytes("192.0.2.1")
    udp = build_udp_header(5000, 9, stranger, IP, b"x") + b"x"
    to_closed_port = request_frame(udp, src=stranger, proto=IPPROTO_UDP)
    sent, (_eth, _ip, _icmp, udp_c), _ = await _answers(True, [to_closed_port, request_frame()])
    assert len(sent) == 1  # the echo after it is answered
    assert udp_c["port_unreachable_no_route"] == 1
