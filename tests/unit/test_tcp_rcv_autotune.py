"""Receive-window autotuning (TcpConfig.recv_buffer_max): the window doubles, up to the
maximum, each time the peer has sent a whole buffer's worth and the application has taken
everything; the window scale offered on the SYN fits the maximum (RFC 7323 2.2)."""

from __future__ import annotations

from anp_async.proto.tcp import ACK, SYN, TcpConnection, TcpOptions
from anp_async.proto.tcp.connection import rcv_wscale_for
from tests.unit.tcp_templates import ISS, LIP, LPORT, RIP, RISS, RPORT, established, plain, rseg

K = 1024
SEG = 8 * K


def autotuned(**kw) -> TcpConnection:  # type: ignore[no-untyped-def]
    cfg = plain(window_scale=True, recv_buffer=64 * K, recv_buffer_max=256 * K, **kw)
    return established(cfg, syn_opts=TcpOptions(mss=1460, wscale=7))


def feed(c: TcpConnection, start: int, n: int, read: bool) -> list[int]:
    """``n`` in-order segments of SEG bytes from byte ``start``; after each, the app reads
    (or not) and the engine's output pass runs. Returns the window field of each ACK."""
    windows = []
    for i in range(n):
        c.on_segment(rseg(RISS + 1 + start + i * SEG, ISS + 1, payload=bytes(SEG)), 1.0)
        if read:
            assert len(c.recv()) == SEG
        (ack,) = c.output(1.0)
        assert ack.flags == ACK and ack.ack == RISS + 1 + start + (i + 1) * SEG
        windows.append(ack.window)
    return windows


def test_syn_offers_the_scale_of_the_largest_window() -> None:
    assert rcv_wscale_for(plain(window_scale=True, recv_buffer=256 * K)) == 3
    assert (
        rcv_wscale_for(plain(window_scale=True, recv_buffer=256 * K, recv_buffer_max=4096 * K)) == 7
    )
    c = TcpConnection.accept_syn(
        plain(window_scale=True, recv_buffer=64 * K, recv_buffer_max=256 * K),
        LIP, LPORT, RIP, RPORT,
        rseg(RISS, 0, SYN, 65535, options=TcpOptions(mss=1460, wscale=7)), ISS, 0.0,
    )  # fmt: skip
    (syn_ack,) = c.output(0.0)
    assert syn_ack.options is not None and syn_ack.options.wscale == 3
    assert syn_ack.window == 65535  # RFC 7323 (2.2): the SYN's window is never scaled


def test_window_doubles_after_a_whole_buffer_read_and_stops_at_the_maximum() -> None:
    c = autotuned()
    # 64 KiB in eight segments: the first seven ACKs offer 64 KiB (8192 << 3) ...
    w = feed(c, 0, 8, read=True)
    assert w[:7] == [8192] * 7
    # ... the eighth completes a buffer's worth with the buffer empty: 128 KiB.
    assert w[7] == 16384 and c.counters["rcv_space_grown"] == 1
    # 128 KiB more: 256 KiB, the maximum; then it stays there.
    w = feed(c, 64 * K, 16, read=True)
    assert w[-1] == 32768 and c.counters["rcv_space_grown"] == 2
    w = feed(c, 192 * K, 40, read=True)
    assert set(w) == {32768} and c.counters["rcv_space_grown"] == 2
    assert c.info()["rcv_space"] == 256 * K


def test_no_growth_while_the_application_does_not_read() -> None:
    c = autotuned()
    w = feed(c, 0, 7, read=False)
    # The window shrinks as the buffer fills (never below what was promised: RFC 9293
    # 3.8.6), and it never grows past the configured buffer.
    assert w == [(64 * K - (i + 1) * SEG) >> 3 for i in range(7)]
    assert c.counters["rcv_space_grown"] == 0
    assert len(c.recv()) == 7 * SEG  # the application catches up ...
    w = feed(c, 7 * SEG, 1, read=True)
    assert w == [16384]  # ... and the next ACK after a buffer's worth offers 128 KiB


def test_no_growth_without_window_scaling() -> None:
    cfg = plain(window_scale=True, recv_buffer=64 * K, recv_buffer_max=256 * K)
    c = established(cfg, syn_opts=TcpOptions(mss=1460))  # the peer offers no scale
    w = feed(c, 0, 24, read=True)
    assert max(w) <= 0xFFFF and c.counters["rcv_space_grown"] == 0
