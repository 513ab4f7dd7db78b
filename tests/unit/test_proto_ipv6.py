"""IPv6, ICMPv6 and Neighbor Discovery without I/O; scapy builds and checks the wire."""

from __future__ import annotations

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import (
    UDP as UDP6,
)
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.packet import Raw

from anp_async.proto import icmpv6, nd
from anp_async.proto.checksum import transport_checksum
from anp_async.proto.errors import ParseError
from anp_async.proto.ipv6 import (
    NH_ICMPV6,
    PP_NEXT_HEADER,
    PP_OPTION,
    ParamProblem,
    Reassembler6,
    build_ipv6_header,
    ip6_to_bytes,
    ip6_to_str,
    link_local_from_mac,
    multicast_mac,
    parse_ipv6,
    solicited_node,
)
from anp_async.proto.ipv6 import (
    fragment6 as our_fragment6,
)
from anp_async.proto.numbers import IPPROTO_TCP, IPPROTO_UDP

A = "fd00::1"
B = "fd00::2"
AB, BB = ip6_to_bytes(A), ip6_to_bytes(B)
MAC = bytes.fromhex("020000000002")
LL_R = ip6_to_bytes("fe80::1")


def test_addresses():
    assert ip6_to_str(AB) == "fd00::1"
    assert ip6_to_bytes("fe80::1%tap0") == LL_R
    with pytest.raises(ValueError):
        ip6_to_bytes("10.0.0.1")
    assert ip6_to_str(solicited_node(ip6_to_bytes("fd00::12:3456"))) == "ff02::1:ff12:3456"
    assert multicast_mac(ip6_to_bytes("ff02::1:ff00:2")) == bytes.fromhex("3333ff000002")
    assert ip6_to_str(link_local_from_mac(MAC)) == "fe80::ff:fe00:2"


def test_parse_plain_udp_and_padding():
    pkt = bytes(IPv6(src=A, dst=B, hlim=7, tc=3, fl=5) / UDP6(sport=1, dport=2) / b"hi")
    hdr, payload = parse_ipv6(pkt + b"\0" * 10)  # Ethernet padding trimmed
    assert (hdr.src, hdr.dst, hdr.proto, hdr.hop_limit) == (AB, BB, IPPROTO_UDP, 7)
    assert (hdr.traffic_class, hdr.flow_label, hdr.header_len) == (3, 5, 40)
    assert bytes(payload) == pkt[40:]
    assert not hdr.is_fragment


def test_build_header_matches_scapy():
    data = b"x" * 12
    ours = build_ipv6_header(AB, BB, IPPROTO_UDP, len(data), hop_limit=9) + data
    assert ours == bytes(IPv6(src=A, dst=B, nh=17, hlim=9) / Raw(data))


def test_extension_headers_walked():
    pkt = bytes(
        IPv6(src=A, dst=B)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting(segleft=0)
        / TCP(sport=1, dport=2)
    )
    hdr, payload = parse_ipv6(pkt)
    assert hdr.proto == IPPROTO_TCP
    assert hdr.header_len == 40 + 8 + 8 + 8
    assert len(payload) == 20
    assert hdr.nh_offset == 40 + 8 + 8  # the Routing header's Next Header field
    plain, _ = parse_ipv6(bytes(IPv6(src=A, dst=B, nh=253) / Raw(b"x" * 8)))
    assert (plain.proto, plain.nh_offset) == (253, 6)


def test_extension_header_errors():
    # RFC 8200 (4.1): Hop-by-Hop not first -> Parameter Problem code 1
    bad = bytes(IPv6(src=A, dst=B) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / TCP())
    with pytest.raises(ParamProblem) as e:
        parse_ipv6(bad)
    assert (e.value.code, e.value.pointer) == (PP_NEXT_HEADER, 40)
    # unknown option with action 10 -> code 2 pointing at the option, even to multicast
    opt = bytes(IPv6(src=A, dst=B, nh=60)) + bytes([59, 0, 0x80 | 0x1F, 4, 0, 0, 0, 0])
    opt = opt[:4] + (8).to_bytes(2, "big") + opt[6:]
    with pytest.raises(ParamProblem) as e:
        parse_ipv6(opt)
    assert (e.value.code, e.value.pointer, e.value.multicast_ok) == (PP_OPTION, 42, True)
    # action 01: discarded silently
    opt1 = opt[:42] + bytes([0x40 | 0x1F]) + opt[43:]
    with pytest.raises(ParseError) as e2:
        parse_ipv6(opt1)
    assert not isinstance(e2.value, ParamProblem)
    # routing header with segments left and unknown type -> code 0 at the type
    rt = bytes(IPv6(src=A, dst=B) / IPv6ExtHdrRouting(type=0, segleft=1, addresses=[A]) / TCP())
    with pytest.raises(ParamProblem) as e:
        parse_ipv6(rt)
    assert (e.value.code, e.value.pointer) == (0, 42)


@pytest.mark.parametrize(
    "buf,reason",
    [
        (b"\x60" + bytes(30), "ip6_truncated"),
        (b"\x40" + bytes(39), "ip6_bad_version"),
        (bytes(IPv6(src=A, dst=B, plen=100)), "ip6_bad_length"),
    ],
)
def test_malformed(buf, reason):
    with pytest.raises(ParseError) as e:
        parse_ipv6(buf)
    assert e.value.reason == reason


def _reassemble(frags, r=None, now=0.0):
    r = Reassembler6() if r is None else r
    out = None
    for f in frags:
        hdr, data = parse_ipv6(bytes(f))
        assert hdr.is_fragment
        out = r.add(hdr, data, now)
    return r, out


def test_reassembly_from_scapy_fragments_any_order():
    whole = IPv6(src=A, dst=B) / IPv6ExtHdrFragment(id=77) / UDP6(sport=5, dport=6) / (b"z" * 3000)
    frags = fragment6(whole, 1280)
    assert len(frags) == 3
    r, out = _reassemble(reversed(frags))
    assert out is not None
    nh, data = out
    assert nh == IPPROTO_UDP and data[8:] == b"z" * 3000
    assert len(r) == 0 and r.bytes_held == 0


def test_reassembly_overlap_duplicate_timeout_bounds():
    whole = IPv6(src=A, dst=B) / IPv6ExtHdrFragment(id=9) / UDP6() / (b"q" * 3000)
    f = fragment6(whole, 1280)
    r, out = _reassemble([f[0], f[0]])
    assert out is None and r.counters["duplicates"] == 1
    # RFC 5722: an overlapping fragment discards the packet
    hdr, data = parse_ipv6(bytes(f[1]))
    hdr.fragment.offset -= 8
    assert r.add(hdr, data, 0.0) is None
    assert r.counters["overlaps"] == 1 and len(r) == 0
    # timeout
    _reassemble([f[0]], r, now=1.0)
    assert r.next_deadline() == 61.0 and r.poll(61.0) == 1 and r.counters["timeouts"] == 1
    # bounded count
    small = Reassembler6(max_datagrams=2)
    for ident in range(4):
        w = IPv6(src=A, dst=B) / IPv6ExtHdrFragment(id=ident) / UDP6() / (b"q" * 3000)
        _reassemble([fragment6(w, 1280)[0]], small)
    assert len(small) == 2 and small.counters["evicted"] == 2


def test_fragment_rules_in_parse():
    # a non-last fragment whose length is not a multiple of 8
    bad = bytes(IPv6(src=A, dst=B) / IPv6ExtHdrFragment(m=1, id=1) / (b"x" * 13))
    with pytest.raises(ParamProblem):
        parse_ipv6(bad)
    # atomic fragment (RFC 6946) processed on its own
    atomic = bytes(IPv6(src=A, dst=B) / IPv6ExtHdrFragment(id=1) / UDP6() / b"ok")
    hdr, data = parse_ipv6(atomic)
    assert hdr.fragment is not None and not hdr.is_fragment
    assert Reassembler6().add(hdr, data, 0.0) == (IPPROTO_UDP, bytes(data))


def test_our_fragments_reassemble_in_scapy():
    payload = bytes(UDP6(sport=1, dport=2) / (b"p" * 4000))
    pieces = our_fragment6(payload, 1500, AB, BB, IPPROTO_UDP, ident=42)
    assert len(pieces) == 3
    assert all(len(h) + len(p) <= 1500 for h, p in pieces)
    r = Reassembler6()
    out = None
    for h, p in pieces:
        hdr, data = parse_ipv6(h + bytes(p))
        out = r.add(hdr, data, 0.0)
    assert out == (IPPROTO_UDP, payload)


def test_transport_checksum_v6_matches_scapy():
    seg = bytes(UDP6(sport=1, dport=2) / b"data!")
    ref = IPv6(bytes(IPv6(src=A, dst=B) / UDP6(sport=1, dport=2) / b"data!"))[UDP6].chksum
    zeroed = seg[:6] + b"\0\0" + seg[8:]
    assert transport_checksum(AB, BB, IPPROTO_UDP, zeroed) == ref


# ------------------------------------------------------------------ ICMPv6


def test_echo_roundtrip_with_scapy():
    req = bytes(IPv6(src=A, dst=B) / ICMPv6EchoRequest(id=7, seq=9, data=b"abc"))
    hdr, payload = parse_ipv6(req)
    msg = icmpv6.parse_icmpv6(payload, hdr.src, hdr.dst)
    assert (msg.type, msg.ident, msg.seq, bytes(msg.body)) == (128, 7, 9, b"abc")
    reply = icmpv6.build_echo_reply_from(msg, BB, AB)
    pkt = IPv6(build_ipv6_header(BB, AB, NH_ICMPV6, len(reply)) + reply)
    r = pkt[ICMPv6EchoReply]
    assert (r.id, r.seq, r.data) == (7, 9, b"abc")
    # scapy computes the same bytes, checksum included
    fresh = IPv6(src=B, dst=A) / ICMPv6EchoReply(id=7, seq=9, data=b"abc")
    assert bytes(fresh)[40:] == reply


def test_echo_request_as_an_icmpv6_ping_socket_sends_it():
    # A program's request (its own identifier, no checksum) leaves with the socket's
    # identifier and the checksum over the pseudo-header: what scapy builds for it.
    written = bytes(ICMPv6EchoRequest(id=1, seq=9, data=b"abc"))
    written = written[:2] + b"\0\0" + written[4:]
    out = icmpv6.echo_request_as(written, 4242, AB, BB)
    msg = icmpv6.parse_icmpv6(out, AB, BB)  # (verifies the checksum)
    assert (msg.type, msg.ident, msg.seq, bytes(msg.body)) == (128, 4242, 9, b"abc")
    assert out == bytes(IPv6(src=A, dst=B) / ICMPv6EchoRequest(id=4242, seq=9, data=b"abc"))[40:]
    for bad, reason in ((written[:7], "icmp6_truncated"),
                        (bytes([129]) + written[1:], "icmp6_not_echo_request")):
        with pytest.raises(ParseError) as e:
            icmpv6.echo_request_as(bad, 1, AB, BB)
        assert e.value.reason == reason


def test_bad_checksum_and_truncation():
    req = bytearray(bytes(ICMPv6EchoRequest(id=1)))
    with pytest.raises(ParseError) as e:
        icmpv6.parse_icmpv6(bytes(req), AB, BB)
    assert e.value.reason == "icmp6_bad_checksum"
    with pytest.raises(ParseError) as e:
        icmpv6.parse_icmpv6(b"\x80\x00", AB, BB)
    assert e.value.reason == "icmp6_truncated"


def test_error_quote_and_parse():
    orig = bytes(
        IPv6(src=A, dst=B) / IPv6ExtHdrDestOpt() / UDP6(sport=1000, dport=53) / (b"x" * 2000)
    )
    err = icmpv6.build_error(icmpv6.DEST_UNREACH, icmpv6.PORT_UNREACH, orig, BB, AB)
    assert 40 + len(err) == 1280  # RFC 4443 (2.4 c)
    pkt = IPv6(build_ipv6_header(BB, AB, NH_ICMPV6, len(err)) + err)
    assert pkt[ICMPv6DestUnreach].code == 4
    msg = icmpv6.parse_icmpv6(err, BB, AB)
    quoted, first8 = icmpv6.parse_error(msg)
    assert quoted.proto == IPPROTO_UDP and int.from_bytes(first8[:2], "big") == 1000


def test_error_allowed_rules():
    udp, _ = parse_ipv6(bytes(IPv6(src=A, dst=B) / UDP6()))
    assert icmpv6.error_allowed(udp, b"", icmpv6.DEST_UNREACH)
    mc, _ = parse_ipv6(bytes(IPv6(src=A, dst="ff02::1") / UDP6()))
    assert not icmpv6.error_allowed(mc, b"", icmpv6.DEST_UNREACH)
    assert icmpv6.error_allowed(mc, b"", icmpv6.PACKET_TOO_BIG)
    err, pl = parse_ipv6(bytes(IPv6(src=A, dst=B) / ICMPv6DestUnreach()))
    assert not icmpv6.error_allowed(err, pl, icmpv6.DEST_UNREACH)
    unspec, _ = parse_ipv6(bytes(IPv6(src="::", dst=B) / UDP6()))
    assert not icmpv6.error_allowed(unspec, b"", icmpv6.DEST_UNREACH)
    lim = icmpv6.RateLimiter(rate=1.0, burst=2)
    assert [lim.allow(10.0) for _ in range(3)] == [True, True, False]
    assert lim.allow(11.0)


# ---------------------------------------------------------------------- ND


def _nd(pkt):
    hdr, payload = parse_ipv6(bytes(pkt))
    msg = icmpv6.parse_icmpv6(payload, hdr.src, hdr.dst)
    return nd.parse_nd(msg, hdr.src, hdr.dst, hdr.hop_limit)


def test_parse_ns_na_ra():
    ns = _nd(
        IPv6(src=A, dst=ip6_to_str(solicited_node(BB)), hlim=255)
        / ICMPv6ND_NS(tgt=B)
        / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01")
    )
    assert ns.target == BB and ns.source_lladdr == bytes.fromhex("020000000001")
    na = _nd(
        IPv6(src=B, dst=A, hlim=255) / ICMPv6ND_NA(tgt=B, R=0, S=1, O=1) / Raw(b"\x02\x01" + MAC)
    )
    assert na.solicited and na.override and not na.router and na.target_lladdr == MAC
    ra = _nd(
        IPv6(src="fe80::1", dst="ff02::1", hlim=255)
        / ICMPv6ND_RA(routerlifetime=1800, reachabletime=20000)
        / ICMPv6NDOptMTU(mtu=1400)
        / ICMPv6NDOptPrefixInfo(prefix="fd00:1::", prefixlen=64)
    )
    assert (ra.router_lifetime, ra.reachable_time, ra.mtu) == (1800, 20.0, 1400)
    assert ra.prefixes[0].prefix_len == 64 and ra.prefixes[0].on_link


@pytest.mark.parametrize(
    "pkt,reason",
    [
        (IPv6(src=A, dst=B, hlim=64) / ICMPv6ND_NS(tgt=B), "nd_bad_hop_limit"),
        (IPv6(src=A, dst=B, hlim=255) / ICMPv6ND_NS(tgt=B, code=1), "nd_bad_code"),
        (IPv6(src=A, dst=B, hlim=255) / ICMPv6ND_NS(tgt="ff02::1"), "nd_bad_target"),
        (IPv6(src="::", dst=B, hlim=255) / ICMPv6ND_NS(tgt=B), "nd_bad_source"),
        (IPv6(src=A, dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt=B, S=1), "nd_bad_target"),
        (
            IPv6(src=A, dst=B, hlim=255) / ICMPv6ND_NS(tgt=B) / Raw(b"\x01\x00" + bytes(6)),
            "nd_bad_option",
        ),
        (IPv6(src=A, dst="ff02::1", hlim=255) / ICMPv6ND_RA(), "nd_bad_source"),
    ],
)
def test_nd_validation(pkt, reason):
    with pytest.raises(ParseError) as e:
        _nd(pkt)
    assert e.value.reason == reason


def test_built_ns_na_are_what_scapy_reads():
    rest, body = nd.build_ns(BB, MAC)
    grp = solicited_node(BB)
    wire = icmpv6.build_icmpv6(icmpv6.NEIGHBOR_SOLICIT, 0, rest, body, AB, grp)
    pkt = IPv6(build_ipv6_header(AB, grp, NH_ICMPV6, len(wire), 255) + wire)
    assert pkt[ICMPv6ND_NS].tgt == B and pkt[ICMPv6NDOptSrcLLAddr].lladdr == "02:00:00:00:00:02"
    rest, body = nd.build_na(BB, MAC, solicited=True)
    wire = icmpv6.build_icmpv6(icmpv6.NEIGHBOR_ADVERT, 0, rest, body, BB, AB)
    pkt = IPv6(build_ipv6_header(BB, AB, NH_ICMPV6, len(wire), 255) + wire)
    na = pkt[ICMPv6ND_NA]
    assert (na.S, na.O, na.R, na.tgt) == (1, 1, 0, B)
    ref = IPv6(
        bytes(
            IPv6(src=B, dst=A, hlim=255)
            / ICMPv6ND_NA(tgt=B, S=1, O=1, R=0)
            / Raw(b"\x02\x01" + MAC)
        )
    )
    assert ref[ICMPv6ND_NA].cksum == na.cksum


def _na(target, mac, solicited=True, override=True):
    return nd.NdMessage(
        icmpv6.NEIGHBOR_ADVERT,
        target=target,
        flags=(nd.FLAG_SOLICITED if solicited else 0) | (nd.FLAG_OVERRIDE if override else 0),
        target_lladdr=mac,
    )


def test_neighbor_cache_states():
    c = nd.NeighborCache(reachable_time=30.0)
    assert c.lookup(AB, 0.0) is None
    sol = c.resolve(AB, "p1", 0.0)
    assert len(sol) == 1 and sol[0].dst_ip == solicited_node(AB)
    assert c.resolve(AB, "p2", 0.1) == []  # one solicitation per resolution
    assert c.state(AB) == nd.INCOMPLETE
    released = c.on_advert(_na(AB, MAC), 0.5)
    assert released == [(MAC, "p1"), (MAC, "p2")]
    assert c.state(AB) == nd.REACHABLE and c.lookup(AB, 1.0) == MAC
    # ReachableTime passes: STALE, and using it starts DELAY
    assert c.lookup(AB, 40.0) == MAC and c.state(AB) == nd.DELAY
    # DELAY_FIRST_PROBE_TIME later: PROBE with unicast solicitations
    sol, failed = c.poll(45.0)
    assert c.state(AB) == nd.PROBE and sol[0].dst_ip == AB and sol[0].dst_mac == MAC
    for t in (46.0, 47.0):
        c.poll(t)
    sol, failed = c.poll(48.0)
    assert failed == [(AB, [])] and c.state(AB) is None


def test_neighbor_cache_confirm_and_failed_resolution():
    c = nd.NeighborCache()
    c.resolve(AB, "p", 0.0)
    for t in (1.0, 2.0):
        sol, failed = c.poll(t)
        assert len(sol) == 1 and not failed
    sol, failed = c.poll(3.0)
    assert failed == [(AB, ["p"])] and c.counters["resolve_failed"] == 1
    # an NS from a neighbour creates a STALE entry; confirm makes it REACHABLE
    c.on_solicit(BB, MAC, 5.0)
    assert c.state(BB) == nd.STALE
    c.confirm(BB, 6.0)
    assert c.state(BB) == nd.REACHABLE
    # NA without override and a different address: REACHABLE -> STALE, address kept
    c.on_advert(_na(BB, b"\x02" * 6, override=False), 7.0)
    assert c.state(BB) == nd.STALE and c.entries()[BB][1] == MAC


def test_neighbor_cache_bounds():
    c = nd.NeighborCache(hold_per_ip=2, max_entries=2)
    for i in range(4):
        c.resolve(AB, i, 0.0)
    assert c.counters["hold_dropped"] == 2
    c.on_solicit(BB, MAC, 0.0)
    c.on_solicit(ip6_to_bytes("fd00::3"), MAC, 0.0)
    assert len(c) == 2 and c.counters["evicted"] == 1


def test_dad():
    d = nd.DadTable(transmits=1)
    assert d.add(BB, 0.0) == [BB] and d.is_tentative(BB)
    assert d.poll(0.5) == ([], [])
    assert d.poll(1.0) == ([], [BB]) and BB in d.preferred
    d.add(AB, 2.0)
    assert d.on_conflict(AB) and AB in d.duplicates and not d.is_tentative(AB)
    assert nd.DadTable(transmits=0).add(AB, 0.0) == []


def test_router_list():
    r = nd.RouterList(link_mtu=1500)
    assert r.start(0.0) and not r.poll(1.0) and r.poll(4.0)
    msg = nd.NdMessage(
        icmpv6.ROUTER_ADVERT,
        router_lifetime=10,
        mtu=1400,
        prefixes=[nd.PrefixInfo(ip6_to_bytes("fd00:1::"), 64, True, True, 100, 50)],
    )
    r.on_advert(LL_R, msg, 5.0)
    assert r.next_deadline() is None and r.mtu == 1400
    assert r.default_router(6.0) == LL_R and r.default_router(16.0) is None
    assert r.on_link(ip6_to_bytes("fd00:1::99"), 6.0) and not r.on_link(AB, 6.0)
    msg.mtu = 9000  # above the link MTU: ignored
    r.on_advert(LL_R, msg, 7.0)
    assert r.mtu == 1400


def test_tso6_virtio_header() -> None:
    """TSO6: GSO_TCPV6, headers through TCP, checksum from the TCP header (40-byte IPv6)."""
    import struct

    from anp_async.nic.offload import VnetOffload
    from anp_async.nic.vnet import GSO_NONE, GSO_TCPV6

    off = VnetOffload(True)
    vnet, tso = off.tcp_header(32, 10000, 1440, v6=True)
    flags, gso, hdr_len, gso_size, csum_start, csum_off, _ = struct.unpack("<BBHHHHH", vnet)
    assert tso and gso == GSO_TCPV6 and flags & 1
    assert (hdr_len, gso_size, csum_start, csum_off) == (14 + 40 + 32, 1440 + 20 - 32, 54, 16)
    vnet, tso = off.tcp_header(20, 100, 1440, v6=True)
    assert not tso and struct.unpack("<BBHHHHH", vnet)[1] == GSO_NONE
    assert struct.unpack("<BBHHHHH", vnet)[4] == 54
