"""IPv4 header, fragmentation, reassembly and next-hop decisions."""

import os
import random

import pytest
from scapy.layers.inet import IP, IPOption_RR

from anp_async.proto.checksum import ones_sum
from anp_async.proto.errors import ParseError
from anp_async.proto.ipv4 import (
    IdGenerator,
    Interface,
    IPv4Header,
    Reassembler,
    build_ipv4_header,
    fragment,
    ip_to_bytes,
    ip_to_str,
    parse_ipv4,
    parse_ipv4_header,
)
from anp_async.proto.numbers import IPPROTO_UDP as PROTO_UDP

SRC = bytes([10, 0, 0, 1])
DST = bytes([10, 0, 0, 2])


def ip(s: str) -> bytes:
    return ip_to_bytes(s)


# -- addresses ---------------------------------------------------------------------------


def test_ip_helpers():
    assert ip_to_bytes("10.0.0.1") == b"\x0a\x00\x00\x01"
    assert ip_to_bytes("255.255.255.255") == b"\xff" * 4
    assert ip_to_bytes(SRC) == SRC
    assert ip_to_str(b"\xc0\xa8\x01\xfe") == "192.168.1.254"
    assert ip_to_str(memoryview(SRC)) == "10.0.0.1"
    for bad in ["", "10.0.0", "10.0.0.256", "10.0.0.-1", "a.b.c.d", "1.2.3.4.5", "10.0.0.1 "]:
        with pytest.raises(ValueError):
            ip_to_bytes(bad)
    with pytest.raises(ValueError):
        ip_to_bytes(b"\x01\x02\x03")


# -- header ------------------------------------------------------------------------------


def test_build_matches_scapy_and_round_trips():
    hdr = build_ipv4_header(SRC, DST, PROTO_UDP, 100, ident=0x1234, ttl=33, tos=0x10)
    ref = bytes(
        IP(
            src="10.0.0.1",
            dst="10.0.0.2",
            proto=17,
            id=0x1234,
            ttl=33,
            tos=0x10,
            flags="DF",
            len=120,
        )
    )
    assert hdr == ref
    assert ones_sum(hdr) == 0xFFFF
    packet = hdr + os.urandom(100)
    h, payload = parse_ipv4(packet)
    assert (h.src, h.dst, h.proto, h.ident, h.ttl, h.tos) == (SRC, DST, 17, 0x1234, 33, 0x10)
    assert h.df and not h.mf and not h.is_fragment
    assert (h.header_len, h.total_length, h.payload_len, h.options) == (20, 120, 100, b"")
    assert payload.tobytes() == packet[20:]
    nodf = build_ipv4_header(SRC, DST, 6, 0, ident=1, df=False)
    assert parse_ipv4(nodf)[0].flags == 0


def test_fragment_fields_round_trip():
    hdr = build_ipv4_header(SRC, DST, 17, 8, ident=9, df=False, mf=True, frag_offset=1480)
    h = parse_ipv4_header(hdr)
    assert h.mf and not h.df and h.frag_offset == 1480 and h.is_fragment


def test_parse_options_from_scapy():
    pkt = bytes(IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_RR()]) / b"data")
    h, payload = parse_ipv4(pkt)
    assert h.header_len > 20 and len(h.options) == h.header_len - 20
    assert payload.tobytes() == b"data"


def test_ethernet_padding_is_trimmed():
    hdr = build_ipv4_header(SRC, DST, 1, 8, ident=1)
    frame_payload = hdr + b"12345678" + b"\x00" * 18  # padded to the 46-byte minimum
    _, payload = parse_ipv4(memoryview(frame_payload))
    assert payload.tobytes() == b"12345678"


def test_payload_is_a_view():
    buf = bytearray(build_ipv4_header(SRC, DST, 1, 4, ident=1) + b"abcd")
    _, payload = parse_ipv4(buf)
    buf[20] = ord("z")
    assert payload.tobytes() == b"zbcd"


def corrupt(packet: bytes, offset: int, value: int, fix_checksum: bool = True) -> bytes:
    b = bytearray(packet)
    b[offset] = value
    if fix_checksum:
        ihl = (b[0] & 0x0F) * 4
        if ihl >= 20 and len(b) >= ihl:
            b[10:12] = b"\x00\x00"
            b[10:12] = (~ones_sum(bytes(b[:ihl])) & 0xFFFF).to_bytes(2, "big")
    return bytes(b)


def test_parse_errors():
    good = build_ipv4_header(SRC, DST, 17, 10, ident=5) + bytes(10)

    def reason(buf, **kw):
        with pytest.raises(ParseError) as exc:
            parse_ipv4(buf, **kw)
        return exc.value.reason

    assert reason(good[:19]) == "ip_truncated"
    assert reason(corrupt(good, 0, 0x65)) == "ip_bad_version"
    assert reason(corrupt(good, 0, 0x44)) == "ip_bad_ihl"
    assert reason(corrupt(good, 0, 0x46)[:20]) == "ip_truncated"  # IHL says 24 bytes
    assert reason(corrupt(good, 3, 31)) == "ip_bad_length"  # longer than the buffer
    assert reason(corrupt(good, 3, 19)) == "ip_bad_length"  # shorter than the header
    assert reason(corrupt(good, 8, 1, fix_checksum=False)) == "ip_bad_checksum"
    h, _ = parse_ipv4(corrupt(good, 8, 1, fix_checksum=False), verify_checksum=False)
    assert h.ttl == 1


def test_build_rejects_oversize():
    build_ipv4_header(SRC, DST, 17, 65515, ident=0)
    with pytest.raises(ValueError):
        build_ipv4_header(SRC, DST, 17, 65516, ident=0)


def test_id_generator_wraps_and_is_seeded():
    gen = IdGenerator(seed=0xFFFE)
    assert [gen.next(), gen(), next(gen)] == [0xFFFE, 0xFFFF, 0]
    values = {IdGenerator().next() for _ in range(50)}
    assert len(values) > 1  # random starts
    g = IdGenerator(7)
    assert len({g.next() for _ in range(65536)}) == 65536


# -- fragmentation -----------------------------------------------------------------------


def test_fragment_fits_is_single():
    payload = os.urandom(1480)
    ((hdr, view),) = fragment(payload, 1500, SRC, DST, 17, ident=3)
    h = parse_ipv4_header(hdr)
    assert not h.is_fragment and h.total_length == 1500 and view.tobytes() == payload


def test_fragment_splits_on_8_byte_boundaries_and_reassembles():
    payload = os.urandom(4000)
    frags = fragment(payload, 1006, SRC, DST, 17, ident=77, ttl=9)
    assert len(frags) == 5  # 984 * 4 + 64
    r = Reassembler()
    out = None
    expected_offset = 0
    for i, (hdr, view) in enumerate(frags):
        h, p = parse_ipv4(hdr + view.tobytes())
        assert h.total_length <= 1006 and h.ident == 77 and h.ttl == 9 and not h.df
        assert h.frag_offset == expected_offset
        assert h.mf == (i < len(frags) - 1)
        if h.mf:
            assert len(p) % 8 == 0
        expected_offset += len(p)
        out = r.add(h, p, now=0.0)
        assert (out is None) == (i < len(frags) - 1)
    assert out == payload
    # scapy agrees the fragments are well formed
    pkts = [IP(hdr + view.tobytes()) for hdr, view in frags]
    assert b"".join(bytes(p.payload) for p in pkts) == payload


def test_fragment_with_df_or_tiny_mtu_refused():
    with pytest.raises(ValueError):
        fragment(bytes(2000), 1500, SRC, DST, 17, ident=1, df=True)
    with pytest.raises(ValueError):
        fragment(bytes(100), 60, SRC, DST, 17, ident=1)
    with pytest.raises(ValueError):
        fragment(bytes(65516), 1500, SRC, DST, 17, ident=1)


# -- reassembly --------------------------------------------------------------------------


def frag_hdr(offset, more, ident=1, src=SRC, proto=17, length=0):
    return IPv4Header(0, 20 + length, ident, 1 if more else 0, offset, 64, proto, 0, src, DST)


def pieces(payload, size):
    return [
        (o, payload[o : o + size], o + size < len(payload)) for o in range(0, len(payload), size)
    ]


def test_reassembly_out_of_order_with_duplicates():
    payload = os.urandom(3000)
    parts = pieces(payload, 512)
    order = parts[::-1] + parts[:2]
    r = Reassembler()
    results = [r.add(frag_hdr(o, m), memoryview(d), now=1.0) for o, d, m in order[:-2]]
    assert results[-1] == payload and all(x is None for x in results[:-1])
    assert len(r) == 0 and r.bytes_held == 0
    assert r.counters["reassembled"] == 1
    # a duplicate arriving after completion starts a new partial that times out
    r.add(frag_hdr(0, True), parts[0][1], now=2.0)
    assert r.poll(31.9) == 0 and r.poll(32.0) == 1


def test_duplicate_fragment_ignored():
    r = Reassembler()
    assert r.add(frag_hdr(0, True), bytes(8), 0.0) is None
    assert r.add(frag_hdr(0, True), bytes(8), 0.0) is None
    assert r.counters["duplicates"] == 1
    assert r.add(frag_hdr(8, False), b"xy", 0.0) == bytes(8) + b"xy"


@pytest.mark.parametrize(
    ("offset", "length", "more"),
    [(0, 16, True), (16, 8, True), (20, 4, False), (8, 8, True), (0, 32, True)],
)
def test_overlap_discards_datagram(offset, length, more):
    r = Reassembler()
    r.add(frag_hdr(8, True), bytes(16), 0.0)  # holds [8, 24)
    assert r.add(frag_hdr(offset, more), b"\x01" * length, 0.0) is None
    assert r.counters["overlaps"] == 1
    assert len(r) == 0 and r.bytes_held == 0


def test_adjacent_fragments_do_not_overlap():
    r = Reassembler()
    r.add(frag_hdr(8, True), bytes(16), 0.0)
    assert r.add(frag_hdr(0, True), bytes(8), 0.0) is None
    assert r.add(frag_hdr(24, False), b"end", 0.0) == bytes(24) + b"end"
    assert r.counters["overlaps"] == 0


def test_timeout_and_next_deadline():
    r = Reassembler(timeout=30.0)
    assert r.next_deadline() is None
    r.add(frag_hdr(0, True, ident=1), bytes(8), now=10.0)
    r.add(frag_hdr(0, True, ident=2), bytes(8), now=15.0)
    r.add(frag_hdr(8, True, ident=1), bytes(8), now=39.0)  # does not extend the timer
    assert r.next_deadline() == 40.0
    assert r.poll(39.9) == 0
    assert r.poll(40.0) == 1
    assert r.next_deadline() == 45.0
    assert r.poll(100.0) == 1
    assert r.counters["timeouts"] == 2 and r.bytes_held == 0 and r.next_deadline() is None


def test_max_datagrams_evicts_oldest():
    r = Reassembler(max_datagrams=2)
    for ident in (1, 2, 3):
        r.add(frag_hdr(0, True, ident=ident), bytes(8), now=float(ident))
    assert len(r) == 2 and r.counters["evicted"] == 1
    # ident 1 is gone: its last fragment starts a new partial instead of completing
    assert r.add(frag_hdr(8, False, ident=1), b"z", 5.0) is None
    assert r.add(frag_hdr(8, False, ident=3), b"z", 5.0) == bytes(8) + b"z"


def test_max_bytes_evicts_oldest_and_never_exceeds():
    r = Reassembler(max_bytes=100)
    r.add(frag_hdr(0, True, ident=1), bytes(48), 0.0)
    r.add(frag_hdr(0, True, ident=2), bytes(48), 0.0)
    assert r.bytes_held == 96
    r.add(frag_hdr(0, True, ident=3), bytes(48), 0.0)
    assert r.bytes_held <= 100 and r.counters["evicted"] == 1 and len(r) == 2
    # a single datagram bigger than the budget cannot complete
    r2 = Reassembler(max_bytes=64)
    r2.add(frag_hdr(0, True), bytes(48), 0.0)
    assert r2.add(frag_hdr(48, False), bytes(40), 0.0) is None
    assert r2.bytes_held == 0 and r2.counters["no_memory"] == 1
    assert r2.add(frag_hdr(0, True, ident=9), bytes(80), 0.0) is None
    assert r2.counters["no_memory"] == 2 and len(r2) == 0


def test_too_big_rejected():
    r = Reassembler()
    r.add(frag_hdr(0, True), bytes(8), 0.0)
    # offset 65512 + 8 data + 20 header = 65540 > 65535 (ping of death)
    assert r.add(frag_hdr(65512, False), bytes(8), 0.0) is None
    assert r.counters["too_big"] == 1 and len(r) == 0
    assert r.add(frag_hdr(65512, True, ident=5), bytes(8), 0.0) is None
    assert r.counters["too_big"] == 2 and len(r) == 0


def test_bad_and_inconsistent_fragments():
    r = Reassembler()
    assert r.add(frag_hdr(0, True), bytes(7), 0.0) is None  # not a multiple of 8
    assert r.add(frag_hdr(0, True), b"", 0.0) is None
    assert r.counters["bad_fragment"] == 2 and len(r) == 0
    r.add(frag_hdr(16, False), bytes(4), 0.0)  # end at 20
    assert r.add(frag_hdr(16, True, length=8), bytes(8), 0.0) is None  # beyond the end
    assert r.counters["inconsistent"] == 1 and len(r) == 0
    r.add(frag_hdr(16, False), bytes(4), 0.0)
    assert r.add(frag_hdr(24, False), bytes(4), 0.0) is None  # two different ends
    assert r.counters["inconsistent"] == 2
    r.add(frag_hdr(0, True, ident=4), bytes(64), 0.0)
    assert r.add(frag_hdr(16, False, ident=4), bytes(4), 0.0) is None  # held data past end
    assert r.counters["inconsistent"] == 3


def test_keys_separate_datagrams():
    r = Reassembler()
    r.add(frag_hdr(0, True, ident=1), b"A" * 8, 0.0)
    r.add(frag_hdr(0, True, ident=1, src=ip("10.0.0.9")), b"B" * 8, 0.0)
    r.add(frag_hdr(0, True, ident=1, proto=6), b"C" * 8, 0.0)
    assert len(r) == 3
    assert r.add(frag_hdr(8, False, ident=1, proto=6), b"c", 0.0) == b"C" * 8 + b"c"
    assert r.add(frag_hdr(8, False, ident=1), b"a", 0.0) == b"A" * 8 + b"a"


def test_non_fragment_passes_through():
    r = Reassembler()
    assert r.add(frag_hdr(0, False), memoryview(b"whole"), 0.0) == b"whole"
    assert r.counters["fragments"] == 0


def test_random_orders_reassemble_exactly():
    rng = random.Random(791)
    for _ in range(30):
        payload = rng.randbytes(rng.randrange(1, 9000))
        size = rng.randrange(1, 200) * 8
        parts = pieces(payload, size)
        if len(parts) == 1:
            continue
        rng.shuffle(parts)
        r = Reassembler()
        outs = [r.add(frag_hdr(o, m), d, 0.0) for o, d, m in parts]
        assert outs[-1] == payload and outs.count(None) == len(parts) - 1


# -- next hop ----------------------------------------------------------------------------


def test_interface_routing():
    itf = Interface(ip("10.0.0.2"), 24, gateway=ip("10.0.0.1"))
    assert itf.is_local(ip("10.0.0.2")) and not itf.is_local(ip("10.0.0.3"))
    assert itf.next_hop(ip("10.0.0.77")) == ip("10.0.0.77")
    assert itf.next_hop(ip("192.0.2.1")) == ip("10.0.0.1")
    assert itf.is_broadcast(ip("10.0.0.255")) and itf.is_broadcast(ip("255.255.255.255"))
    assert not itf.is_broadcast(ip("10.0.0.254"))
    assert itf.next_hop(ip("10.0.0.255")) == ip("10.0.0.255")
    assert itf.next_hop(ip("255.255.255.255")) == ip("255.255.255.255")
    assert itf.next_hop(ip("224.0.0.1")) == ip("224.0.0.1")
    assert itf.next_hop(ip("127.0.0.1")) is None and itf.next_hop(ip("0.1.2.3")) is None
    assert itf.accepts(ip("10.0.0.2")) and itf.accepts(ip("10.0.0.255"))
    assert not itf.accepts(ip("10.0.0.3"))
    assert "10.0.0.2/24" in repr(itf)


def test_interface_without_gateway_and_odd_prefixes():
    itf = Interface(ip("10.1.2.3"), 16)
    assert itf.next_hop(ip("10.1.200.4")) == ip("10.1.200.4")
    assert itf.next_hop(ip("10.2.0.1")) is None
    assert itf.broadcast == ip("10.1.255.255")
    p31 = Interface(ip("10.0.0.0"), 31)
    assert p31.broadcast is None and p31.next_hop(ip("10.0.0.1")) == ip("10.0.0.1")
    assert not p31.is_broadcast(ip("10.0.0.1"))
    p32 = Interface(ip("10.0.0.5"), 32)
    assert p32.next_hop(ip("10.0.0.6")) is None
    p0 = Interface(ip("10.0.0.5"), 0)
    assert p0.next_hop(ip("192.0.2.1")) == ip("192.0.2.1")


def test_interface_validation():
    with pytest.raises(ValueError):
        Interface(ip("10.0.0.2"), 33)
    with pytest.raises(ValueError):
        Interface(ip("10.0.0.2"), 24, gateway=ip("10.0.1.1"))  # not on link
    with pytest.raises(ValueError):
        Interface(ip("10.0.0.2"), 24, gateway=ip("10.0.0.2"))
    with pytest.raises(ValueError):
        Interface(b"\x01\x02", 24)
