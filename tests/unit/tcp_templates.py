"""Segment templates for the engine's exact-segment tests (smoltcp's tcp.rs style).

Local side 10.0.0.2:80 with ISS 1000 (first data byte 1001); remote side 10.0.0.1:49500
with ISS 5000 (first data byte 5001). ``plain()`` turns every option off and uses
64000-byte buffers, so the expected segments are easy to write down.
"""

from __future__ import annotations

from anp_async.proto.tcp import (
    ACK,
    SYN,
    Closed,
    Connected,
    TcpConfig,
    TcpConnection,
    TcpOptions,
    TcpSegment,
    TcpState,
)

LIP = bytes([10, 0, 0, 2])
RIP = bytes([10, 0, 0, 1])
LPORT = 80
RPORT = 49500
ISS = 1000
RISS = 5000
M = 0xFFFFFFFF
WIN = 64000  # the plain config's receive buffer


def plain(**kw) -> TcpConfig:
    """No options, 64000-byte buffers: segments are easy to write down."""
    base = dict(
        timestamps=False,
        sack=False,
        window_scale=False,
        recv_buffer=WIN,
        send_buffer=WIN,
        rto_min=0.2,
        rto_initial=1.0,
        msl=1.0,
    )
    base.update(kw)
    return TcpConfig(**base)


def rseg(seq, ack=0, flags=ACK, window=65535, payload=b"", options=None, rport=RPORT) -> TcpSegment:
    """A segment from the remote peer."""
    return TcpSegment(rport, LPORT, seq & M, ack & M, flags, window, payload, options)


def lseg(seq, ack, flags=ACK, window=WIN, payload=b"", options=None) -> TcpSegment:
    """A segment we expect the engine to send."""
    return TcpSegment(LPORT, RPORT, seq & M, ack & M, flags, window, payload, options)


def established(
    cfg: TcpConfig | None = None,
    now: float = 0.0,
    peer_window: int = 65535,
    syn_opts: TcpOptions | None = None,
    rport: int = RPORT,
) -> TcpConnection:
    """A passively opened connection in ESTABLISHED (events already taken)."""
    cfg = cfg or plain()
    syn = rseg(RISS, 0, SYN, peer_window, options=syn_opts or TcpOptions(mss=1460), rport=rport)
    c = TcpConnection.accept_syn(cfg, LIP, LPORT, RIP, rport, syn, ISS, now)
    out = c.output(now)
    assert len(out) == 1 and out[0].flags == SYN | ACK
    c.on_segment(rseg(RISS + 1, ISS + 1, ACK, peer_window, rport=rport), now)
    assert c.state is TcpState.ESTABLISHED
    assert c.take_events() == [Connected()]
    return c


def closed_reason(c: TcpConnection) -> str | None:
    """The reason of the Closed event among the pending events, if any."""
    for ev in c.take_events():
        if isinstance(ev, Closed):
            return ev.reason
    return None
