"""The established-connection fast path gives the answers of the full RFC 9293 path.

Two identical connections get the same frames at the same times: one the way the stack
takes them (``predict_frame`` + ``rx_predicted`` on the raw frame, the full way when the
prediction fails), the other only the full way (``on_segment`` with header prediction off).
After every step their whole state, their events and the exact segments ``output`` gives
must be equal. Hypothesis drives the peer: in-order and out-of-order data, old and new
ACKs, window changes, timestamps going backwards (PAWS), ECN marks, FIN, and the
application sending and reading in between. The header templates are compared byte for
byte with the stack's layer-by-layer builders.
"""

from __future__ import annotations

import collections
import enum
import socket
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anp_async import Stack, StackConfig
from anp_async.nic.base import Buffer, Nic
from anp_async.proto.checksum import fold
from anp_async.proto.ethernet import build_ethernet_header
from anp_async.proto.ipv4 import IdGenerator, build_ipv4_header, parse_ipv4
from anp_async.proto.numbers import IPPROTO_TCP
from anp_async.proto.tcp import ACK, FIN, PSH, TcpConfig, TcpConnection, TcpOptions, TcpSegment
from anp_async.proto.tcp.fastpath import (
    TX_NOT_TEMPLATED,
    TX_SENT,
    TX_TSO,
    HeaderTemplate,
    predict_frame,
)
from anp_async.proto.tcp.segment import (
    CE,
    CWR,
    ECE,
    ECT_0,
    URG,
    build_tcp_header,
    build_tcp_header_partial,
    parse_tcp,
)
from tests.unit.tcp_templates import ISS, LIP, LPORT, RIP, RISS, RPORT, M, established

MAC = bytes.fromhex("020000000002")
PEER_MAC = bytes.fromhex("020000000001")


class FullPath(TcpConnection):
    """The same engine with header prediction off: every segment takes RFC 9293's steps."""

    __slots__ = ()
    header_prediction = False


def snap(obj: Any, seen: set[int] | None = None) -> Any:
    """Everything an object holds, as plain values (for ==)."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, enum.Enum)):
        return obj
    if isinstance(obj, (memoryview, bytearray)):
        return bytes(obj)
    if isinstance(obj, (list, tuple, collections.deque)):
        return [snap(x, seen) for x in obj]
    if isinstance(obj, dict):
        return {k: snap(v, seen) for k, v in obj.items()}
    if callable(obj) and not hasattr(obj, "__slots__") and not hasattr(obj, "__dict__"):
        return repr(obj)
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return "<seen>"
    seen.add(id(obj))
    names = [n for cls in type(obj).__mro__ for n in getattr(cls, "__slots__", ())]
    out = {n: snap(getattr(obj, n), seen) for n in names if hasattr(obj, n)}
    out.update({k: snap(v, seen) for k, v in getattr(obj, "__dict__", {}).items()})
    return type(obj).__name__.replace("FullPath", "TcpConnection"), out


def cfg(ts: bool, sack: bool, ecn: bool) -> TcpConfig:
    return TcpConfig(
        timestamps=ts, sack=sack, window_scale=True, recv_buffer=8000, send_buffer=64000,
        delayed_ack=0.04, ecn=ecn, ecn_accept=ecn, max_ooo_segments=8,
    )  # fmt: skip


def frame(seg: TcpSegment, tos: int = 0, corrupt: bool = False) -> bytes:
    """The Ethernet frame carrying ``seg`` from the peer to us."""
    tcp = bytearray(build_tcp_header(seg, RIP, LIP) + bytes(seg.payload))
    if corrupt:
        tcp[-1] ^= 0x40
    ip = build_ipv4_header(RIP, LIP, IPPROTO_TCP, len(tcp), 7, tos=tos)
    return build_ethernet_header(MAC, PEER_MAC, 0x0800) + ip + bytes(tcp)


def full_way(c: TcpConnection, fr: bytes, now: float) -> None:
    """What the stack does with a frame the prediction did not take (the parsers)."""
    hdr, data = parse_ipv4(memoryview(fr)[14:])
    try:
        seg = parse_tcp(data, hdr.src, hdr.dst)
    except Exception:
        return  # counted and dropped by the TCP layer
    if hdr.tos & 3:
        seg.ecn = hdr.tos & 3
    c.on_segment(seg, now)


class Pair:
    """The fast-path connection and the full-path one, fed alike."""

    def __init__(self, ts: bool, sack: bool, ecn: bool) -> None:
        opts = TcpOptions(mss=1000, wscale=2, sack_permitted=sack, timestamp=(100, 0) if ts else None)
        conns = []
        for _ in range(2):
            c = established(cfg(ts, sack, ecn), now=0.0, peer_window=20000, syn_opts=opts)
            conns.append(c)
        self.fast, self.full = conns
        self.full.__class__ = FullPath
        if ecn:
            for c in conns:
                c.ecn_ok = True
        self.now = 0.0
        self.peer_nxt = RISS + 1  # the peer's next sequence number
        self.sent_hi = ISS + 1  # the highest sequence number we sent (wire)
        self.tsval = 100
        self.taken = 0

    def rx(self, fr: bytes) -> None:
        got = predict_frame(fr, 0, MAC, True)
        if got is not None and got[0] == RIP + LIP + RPORT.to_bytes(2, "big") + LPORT.to_bytes(2, "big"):
            _, seq, ack, window, ts, payload = got
            if self.fast.rx_predicted(seq, ack, window, ts, payload, self.now):
                self.taken += 1
            else:
                full_way(self.fast, fr, self.now)
        else:
            full_way(self.fast, fr, self.now)
        full_way(self.full, fr, self.now)

    def check(self) -> None:
        assert self.fast.take_events() == self.full.take_events()
        out_fast, out_full = self.fast.output(self.now), self.full.output(self.now)
        assert out_fast == out_full
        for seg in out_fast:
            end = (seg.seq + len(seg.payload) + (1 if seg.flags & FIN else 0)) & M
            if (end - self.sent_hi) & M < 0x80000000:
                self.sent_hi = end
        assert snap(self.fast) == snap(self.full)
        assert self.fast.next_deadline() == self.full.next_deadline()


# The segments an established connection mostly gets (the prediction's case) ...
typical = st.tuples(
    st.just("seg"),
    st.sampled_from([0, 0, 64, 1000, 1200]),
    st.just(0),
    st.integers(0, 2),
    st.sampled_from([ACK, ACK | PSH]),
    st.just(1),
    st.just(20000),
    st.just(0),
    st.just(False),
    st.just(False),
)
# ... and everything else.
step = st.one_of(
    typical,
    typical,
    st.tuples(
        st.just("seg"),
        st.integers(0, 1200),  # payload
        st.sampled_from([0, 0, 0, 0, -300, 500, 2000]),  # distance from the next expected
        st.integers(0, 4),  # which ACK
        st.sampled_from([ACK, ACK, ACK | PSH, ACK | FIN, ACK | ECE, ACK | CWR, ACK | URG]),
        st.sampled_from([1, 1, 0, -5, 3]),  # TSval step (negative: PAWS)
        st.sampled_from([20000, 20000, 0, 3000, 65535]),  # window field
        st.sampled_from([0, 0, 0, ECT_0, CE]),  # IP ECN field
        st.booleans(),  # a SACK block
        st.integers(0, 30) .map(lambda n: n == 0),  # corrupted checksum
    ),
    st.tuples(st.just("send"), st.integers(1, 3000)),
    st.tuples(st.just("read"), st.integers(0, 9000)),
    st.tuples(st.just("read"), st.just(0)),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.001, 0.05, 0.3, 1.5])),
)


def apply(p: Pair, s: tuple[Any, ...]) -> None:
    kind = s[0]
    if kind == "send":
        data = bytes(range(256)) * 12
        assert p.fast.send(data[: s[1]], p.now) == p.full.send(data[: s[1]], p.now)
    elif kind == "read":
        assert p.fast.recv(s[1] or None) == p.full.recv(s[1] or None)
    elif kind == "tick":
        p.now += s[1]
        for c in (p.fast, p.full):
            d = c.next_deadline()
            if d is not None and d <= p.now:
                c.on_timer(p.now)
    else:
        _, n, dist, which, flags, dts, win, tos, sack, corrupt = s
        una = (p.fast.iss + p.fast.snd_una) & M
        acks = [una, p.sent_hi, (una + (p.sent_hi - una & M) // 2) & M, (una - 100) & M,
                (p.sent_hi + 10) & M]  # fmt: skip
        p.tsval = (p.tsval + dts) & M
        opts = None
        if p.fast.ts_ok or sack:
            opts = TcpOptions(
                timestamp=(p.tsval, p.fast._ts_val(p.now)) if p.fast.ts_ok else None,
                sack_blocks=(((p.sent_hi - 1) & M, p.sent_hi),) if sack and p.fast.sack_ok else (),
            )
            if opts.timestamp is None and not opts.sack_blocks:
                opts = None
        seq = (p.peer_nxt + dist) & M
        payload = bytes((seq + i) & 0xFF for i in range(n))
        seg = TcpSegment(RPORT, LPORT, seq, acks[which], flags, win, payload, opts)
        p.rx(frame(seg, tos, corrupt))
        if dist == 0 and not corrupt:
            p.peer_nxt = (seq + n + (1 if flags & FIN else 0)) & M


@settings(max_examples=300, deadline=None)
@given(
    st.booleans(), st.booleans(), st.booleans(), st.lists(step, min_size=1, max_size=40)
)
def test_fast_path_equals_full_path(ts: bool, sack: bool, ecn: bool, steps: list[Any]) -> None:
    p = Pair(ts, sack, ecn)
    p.check()
    for s in steps:
        apply(p, s)
        p.check()


def test_in_order_request_response_takes_the_fast_path() -> None:
    # The benchmark's pattern: a request arrives, the reply goes out with the ACK, the
    # next request acknowledges the reply. Every request after the first is predicted.
    p = Pair(True, True, False)
    for _ in range(20):
        apply(p, ("seg", 64, 0, 1, ACK | PSH, 1, 20000, 0, False, False))
        p.check()
        apply(p, ("read", 0))
        apply(p, ("send", 64))
        p.check()
    assert p.taken >= 19
    assert p.fast.counters["segments_in"] == p.full.counters["segments_in"]


# ------------------------------------------------------------------- header templates

segs = st.builds(
    TcpSegment,
    st.just(LPORT),
    st.just(RPORT),
    st.integers(0, M),
    st.integers(0, M),
    st.sampled_from([ACK, ACK | PSH, ACK | FIN, ACK | PSH | FIN, ACK | ECE, ACK | CWR]),
    st.integers(0, 0xFFFF),
    st.binary(max_size=1500),
    st.one_of(
        st.none(),
        st.builds(TcpOptions, timestamp=st.tuples(st.integers(0, M), st.integers(0, M))),
        st.builds(TcpOptions, mss=st.just(1460)),
        st.builds(
            TcpOptions,
            timestamp=st.tuples(st.integers(0, M), st.integers(0, M)),
            sack_blocks=st.just(((1, 2),)),
        ),
    ),
    st.just(0),
    st.sampled_from([0, 0, ECT_0]),
)


@settings(max_examples=400, deadline=None)
@given(segs, st.booleans(), st.sampled_from([0, 1000, 1448]), st.integers(0, 0xFFFF))
def test_template_builds_what_the_layers_build(
    seg: TcpSegment, partial: bool, mss: int, first_id: int
) -> None:
    link = bytes(10) + build_ethernet_header(PEER_MAC, MAC, 0x0800)
    tpl = HeaderTemplate(link, LIP, RIP, LPORT, RPORT, partial=partial, mtu=1500)
    ids = IdGenerator(first_id)
    hdr = tpl.header(seg, ids.next, mss)
    o = seg.options
    thl = 20 if o is None else (32 if o.timestamp is not None and not o.sack_blocks and o.mss is None else 0)
    plen = len(seg.payload)
    # More than one mss of payload is a TSO super-segment: templated only with the
    # partial checksum (offload), whatever the MTU.
    tso = bool(mss and plen > mss + 20 - thl)
    shaped = thl and not seg.ecn and (partial if tso else 20 + thl + plen <= 1500)
    plen = len(seg.payload)
    # More than one mss of payload is a TSO super-segment: templated only with the
    # partial checksum (offload), whatever the MTU.
    tso = bool(mss and plen > mss + 20 - thl)
    shaped = thl and not seg.ecn and (partial if tso else 20 + thl + plen <= 1500)
    if not shaped:
        assert hdr is None
        assert ids.next() == first_id  # no ID taken
        return
    assert hdr is not None
    tcp = build_tcp_header_partial(seg, LIP, RIP) if partial else build_tcp_header(seg, LIP, RIP)
    ip = build_ipv4_header(LIP, RIP, IPPROTO_TCP, len(tcp) + plen, first_id)
    assert hdr == link + ip + tcp


def test_template_relink_and_checks() -> None:
    link = build_ethernet_header(PEER_MAC, MAC, 0x0800)
    tpl = HeaderTemplate(bytes(14), LIP, RIP, LPORT, RPORT, partial=False, arp_version=-1)
    tpl.relink(link, 3, 60.0)
    assert tpl.arp_version == 3 and tpl.expires == 60.0
    seg = TcpSegment(LPORT, RPORT, 1, 2, ACK, 100)
    hdr = tpl.header(seg, IdGenerator(5).next)
    assert hdr is not None and hdr[:14] == link
    # the pseudo-header sum alone is what a partial checksum holds
    part = HeaderTemplate(link, LIP, RIP, LPORT, RPORT, partial=True).header(seg, IdGenerator(5).next)
    assert part is not None
    assert int.from_bytes(part[14 + 20 + 16 : 14 + 20 + 18], "big") == fold(
        int.from_bytes(LIP, "big") + int.from_bytes(RIP, "big") + IPPROTO_TCP + 20
    )
    try:
        tpl.relink(bytes(13), 4, 1.0)
    except ValueError:
        pass
    else:
        raise AssertionError("a shorter link header must be refused")


# ------------------------------------------------------------------- frame prediction


def test_predict_frame_takes_only_the_predicted_shape() -> None:
    seg = TcpSegment(RPORT, LPORT, 10, 20, ACK | PSH, 300, b"x" * 64, TcpOptions(timestamp=(1, 2)))
    good = frame(seg)
    got = predict_frame(good, 0, MAC, True)
    assert got is not None
    key, sq, ak, win, ts, payload = got
    assert key == RIP + LIP + RPORT.to_bytes(2, "big") + LPORT.to_bytes(2, "big")
    assert (sq, ak, win, ts, bytes(payload)) == (10, 20, 300, (1, 2), b"x" * 64)
    assert predict_frame(bytes(12) + good, 12, MAC, True) == got
    # Each of these goes the full way.
    assert predict_frame(good, 0, PEER_MAC, True) is None  # not our MAC
    assert predict_frame(frame(seg, corrupt=True), 0, MAC, True) is None  # bad TCP checksum
    assert predict_frame(frame(seg, corrupt=True), 0, MAC, False) is not None  # NIC vouched
    bad_ip = bytearray(good)
    bad_ip[14 + 8] ^= 1  # TTL changed, IP checksum not
    assert predict_frame(bytes(bad_ip), 0, MAC, True) is None
    assert predict_frame(frame(seg, tos=CE), 0, MAC, True) is None
    assert predict_frame(good[:60], 0, MAC, True) is None  # shorter than its total length
    for flags in (ACK | FIN, ACK | URG, ACK | ECE, ACK, 0):
        seg2 = TcpSegment(RPORT, LPORT, 10, 20, flags, 300, b"", TcpOptions(timestamp=(1, 2)))
        assert (predict_frame(frame(seg2), 0, MAC, True) is not None) is (flags == ACK)
    sack = TcpSegment(RPORT, LPORT, 10, 20, ACK, 300, b"", TcpOptions(timestamp=(1, 2), sack_blocks=((5, 6),)))
    assert predict_frame(frame(sack), 0, MAC, True) is None
    plain = TcpSegment(RPORT, LPORT, 10, 20, ACK, 300, b"ab")
    got = predict_frame(frame(plain) + bytes(20), 0, MAC, True)  # Ethernet padding
    assert got is not None and got[4] is None and bytes(got[5]) == b"ab"


# ------------------------------------------------------------- the stack's send glue


class RecordingNic(Nic):
    """Keeps every frame's parts (a socketpair gives the receive mode a descriptor)."""

    def __init__(self, vnet_hdr: bool) -> None:
        super().__init__()
        self.vnet_hdr = vnet_hdr
        self._sock, self._peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sent: list[list[bytes]] = []

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv_batch(self, max_frames: int = 64) -> list[bytes]:
        return []

    def send(self, parts: Sequence[Buffer]) -> None:
        self.sent.append([bytes(p) for p in parts])

    def close(self) -> None:
        self._sock.close()
        self._peer.close()


@pytest.mark.parametrize("vnet", [True, False], ids=["vnet", "plain"])
async def test_stack_sends_templated_frames_as_send_tcp_does(vnet: bool) -> None:
    nic = RecordingNic(vnet)
    async with Stack(StackConfig(nic=nic, ip="10.0.0.2/24", mac="02:00:00:00:00:02")) as stack:
        stack.arp.add_static(RIP, PEER_MAC)
        tpl = stack.tcp_template(RIP, LPORT, RPORT)
        assert tpl is not None
        assert stack.tcp_template(b"\xff" * 4, LPORT, RPORT) is None  # broadcast
        opts = TcpOptions(timestamp=(123456, 654321))
        for seg in (
            TcpSegment(LPORT, RPORT, 7, 9, ACK | PSH, 500, b"q" * 64, opts),
            TcpSegment(LPORT, RPORT, 7, 9, ACK, 500, b"", None),
            # A TSO super-segment (three MSS of payload; only the offload NIC cuts it).
            TcpSegment(LPORT, RPORT, 7, 9, ACK | PSH, 500, b"t" * 3 * 1448, opts),
        ):
            stack.ip_ids = IdGenerator(77)
            sent = stack.send_templated(tpl, seg, 1448, stack.now())
            if len(seg.payload) > 1448 and not vnet:
                assert sent == TX_NOT_TEMPLATED and stack.ip_ids.next() == 77
                continue
            fast = nic.sent[-1]
            stack.ip_ids = IdGenerator(77)
            tso = stack.send_tcp(RIP, seg, 1448)
            assert sent == (TX_TSO if tso else TX_SENT)
            full = nic.sent[-1]
            assert b"".join(fast) == b"".join(full)
            assert (fast[0] == full[0]) is vnet  # the virtio-net header is a part of its own
        # Not template-shaped (SACK blocks): nothing sent, no ID taken.
        n = len(nic.sent)
        sack = TcpSegment(LPORT, RPORT, 7, 9, ACK, 500, b"", TcpOptions(sack_blocks=((1, 2),)))
        assert not stack.send_templated(tpl, sack, 0, stack.now()) and len(nic.sent) == n
        # The neighbour's MAC changes: the template follows the ARP table.
        new_mac = bytes.fromhex("020000000009")
        stack.arp.add_static(RIP, new_mac)
        seg = TcpSegment(LPORT, RPORT, 7, 9, ACK, 500)
        assert stack.send_templated(tpl, seg, 0, stack.now())
        frame = b"".join(nic.sent[-1])[12 if vnet else 0 :]
        assert frame[:6] == new_mac
        # ... and is gone: send_tcp's way (ARP, hold queue) takes over.
        stack.arp.remove(RIP)
        assert not stack.send_templated(tpl, seg, 0, stack.now())


async def test_template_of_an_off_link_peer_heads_for_the_gateway() -> None:
    cfg = StackConfig(nic=RecordingNic(False), ip="10.0.0.2/24", gateway="10.0.0.1")
    async with Stack(cfg) as stack:
        far = bytes([192, 0, 2, 9])
        tpl = stack.tcp_template(far, LPORT, RPORT)
        assert tpl is not None and tpl.next_hop == RIP and tpl.dst == far
        seg = TcpSegment(LPORT, RPORT, 7, 9, ACK, 500)
        assert not stack.send_templated(tpl, seg, 0, stack.now())  # gateway not resolved
        stack.arp.add_static(RIP, PEER_MAC)
        assert stack.send_templated(tpl, seg, 0, stack.now())
        frame = b"".join(stack.nic.sent[-1])  # type: ignore[attr-defined]
        assert frame[:6] == PEER_MAC and frame[14 + 16 : 14 + 20] == far
