"""SYN cookies (RFC 4987 (3.6)): the sans-I/O cookie codec, and the handshake through TcpHost
and TcpConnection.from_cookie."""

from __future__ import annotations

import random

import pytest

from anp_async.proto.tcp import ACK, PSH, SYN, TcpConfig, TcpOptions, TcpSegment
from anp_async.proto.tcp.connection import TcpState
from anp_async.proto.tcp.events import Connected, DataReceived
from anp_async.proto.tcp.host import TcpHost
from anp_async.proto.tcp.syncookies import (
    SLOT,
    SynCookies,
    decode_ts_options,
    encode_ts_options,
)
from tests.unit.test_tcp_host import Entry

LIP = bytes([10, 0, 0, 2])
RIP = bytes([10, 0, 0, 1])
LPORT, RPORT = 80, 49500
M = 0xFFFFFFFF
SECRET = bytes(range(32))


def test_cookie_roundtrip_and_mss_index() -> None:
    sc = SynCookies(SECRET)
    for mss, want in ((1460, 1460), (1400, 1220), (9000, 1460), (536, 536), (100, 536)):
        cookie, got = sc.make(RIP, RPORT, LIP, LPORT, 777, mss, 1000.0)
        assert got == want
        assert sc.check(RIP, RPORT, LIP, LPORT, 777, cookie, 1000.5) == want


def test_cookie_bound_to_tuple_isn_and_age() -> None:
    sc = SynCookies(SECRET)
    cookie, _ = sc.make(RIP, RPORT, LIP, LPORT, 777, 1460, 1000.0)
    assert sc.check(RIP, RPORT + 1, LIP, LPORT, 777, cookie, 1000.0) is None
    assert sc.check(bytes([10, 0, 0, 9]), RPORT, LIP, LPORT, 777, cookie, 1000.0) is None
    assert sc.check(RIP, RPORT, LIP, LPORT, 778, cookie, 1000.0) is None
    assert sc.check(RIP, RPORT, LIP, LPORT, 777, cookie ^ 4, 1000.0) is None
    assert SynCookies(bytes(32)).check(RIP, RPORT, LIP, LPORT, 777, cookie, 1000.0) is None
    # Valid for the current and the previous slot (64-128 s), not after.
    slot_start = (1000.0 // SLOT) * SLOT
    assert sc.check(RIP, RPORT, LIP, LPORT, 777, cookie, slot_start + SLOT + 1) == 1460
    assert sc.check(RIP, RPORT, LIP, LPORT, 777, cookie, slot_start + 2 * SLOT + 1) is None


def test_forged_cookies_fail() -> None:
    sc = SynCookies(SECRET)
    rng = random.Random(1)
    accepted = sum(
        sc.check(RIP, RPORT, LIP, LPORT, 777, rng.getrandbits(32), 500.0) is not None
        for _ in range(20000)
    )
    assert accepted <= 1  # 2**-25 per try (plus the slot bits)


def test_secret_too_short() -> None:
    with pytest.raises(ValueError):
        SynCookies(b"short")


def test_ts_option_bits() -> None:
    for ws, sack in ((None, False), (0, True), (7, False), (14, True)):
        for tsval in (0x12345678, 0x40, 0x3F, 0):
            enc = encode_ts_options(tsval, ws, sack)
            assert decode_ts_options(enc) == (ws, sack)
            # Never ahead of the clock (modulo wrap): later TSvals never look older.
            assert ((tsval - enc) & M) < 128


def _cookie_handshake(cfg: TcpConfig, with_ts: bool, data: bytes = b""):
    """Through the real TcpHost: a full backlog makes it answer a SYN with a cookie
    SYN-ACK; the peer's ACK returning the cookie rebuilds the connection."""
    host = TcpHost(LIP, cfg, 1500, Entry, secret=SECRET + bytes(16))
    host.cookies = SynCookies(SECRET)
    host.listen(LPORT, 1, lambda _: None)
    now = 100.0
    # Two half-open connections fill the SYN queue of a backlog of 1 (backlog + 1, as Linux).
    for k in (1, 2):
        first = TcpSegment(RPORT + k, LPORT, 7, 0, SYN, 65535, options=TcpOptions(mss=1460))
        assert host.input(RIP, LIP, first, now) is not None
    peer_isn = 424242
    syn_opts = (
        TcpOptions(mss=1400, wscale=7, sack_permitted=True, timestamp=(4999, 0))
        if with_ts
        else TcpOptions(mss=1400)
    )
    syn = TcpSegment(RPORT, LPORT, peer_isn, 0, SYN, 65535, options=syn_opts)
    assert host.input(RIP, LIP, syn, now) is None
    [(dst, syn_ack)] = host.take_outbox()
    assert dst == RIP and syn_ack.flags == SYN | ACK and syn_ack.ack == peer_isn + 1
    cookie = syn_ack.seq
    assert syn_ack.options is not None
    opts = None
    if with_ts:
        assert syn_ack.options.timestamp is not None
        our_ts = syn_ack.options.timestamp[0]
        assert decode_ts_options(our_ts) == (7, True)
        opts = TcpOptions(timestamp=(5000, our_ts))
    ack = TcpSegment(
        RPORT, LPORT, (peer_isn + 1) & M, (cookie + 1) & M, ACK | PSH, 1000, data, opts
    )
    entry = host.input(RIP, LIP, ack, now + 0.05)
    assert entry is not None and host.counters["syncookies_ok"] == 1
    return entry.conn, cookie, peer_isn


def test_from_cookie_with_timestamps_restores_options() -> None:
    cfg = TcpConfig(recv_buffer=256 * 1024)
    conn, cookie, peer_isn = _cookie_handshake(cfg, True, b"hello")
    assert conn.state is TcpState.ESTABLISHED
    assert conn.take_events() == [Connected(), DataReceived(5)]
    assert conn.recv() == b"hello"
    assert conn.ts_ok and conn.sack_ok
    assert (conn.snd_wscale, conn.rcv_wscale) == (7, 3)
    assert conn.snd_wnd == 1000 << 7
    assert conn.snd_mss == 1220 - 12  # cookie MSS minus the TS option
    out = conn.output(100.2)
    assert len(out) == 1
    a = out[0]
    assert (a.seq, a.ack, a.flags) == ((cookie + 1) & M, (peer_isn + 6) & M, ACK)
    assert a.options.timestamp == (conn._ts_val(100.2), 5000)
    conn.send(b"world", 100.3)
    (d,) = conn.output(100.3)
    assert d.payload == b"world" and d.seq == (cookie + 1) & M


def test_from_cookie_without_timestamps_has_no_scaling_or_sack() -> None:
    conn, _, _ = _cookie_handshake(TcpConfig(), False)
    assert conn.state is TcpState.ESTABLISHED
    assert not conn.ts_ok and not conn.sack_ok
    assert conn.snd_wscale == 0 and conn.rcv_wscale == 0
    assert conn.snd_mss == 1220
