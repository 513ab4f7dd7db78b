"""The TCP connection state machine (RFC 9293), sans-I/O.

State in, segments and events out; time is the float ``now`` passed by the caller. Calls that
change state (``on_segment``, ``on_timer``, ``send``, ``recv``, ``shutdown``, ``abort``) only
update the TCB and set flags; ``output(now)`` then emits whatever is due (SYN, data, FIN,
retransmissions, probes, and at most one pure ACK), so a batch of incoming segments yields one
cumulative ACK.

Sequence numbers inside the TCB are unbounded integers relative to the initial sequence
numbers: on the send side 0 is our SYN and the first data byte is 1; on the receive side 0 is
the peer's SYN. Wire numbers are ``(iss + n) mod 2**32`` and ``(irs + n) mod 2**32``. This keeps
every comparison a plain integer comparison; wrap-around is handled once, where a wire number
is converted (always relative to SND.UNA or RCV.NXT, within 2**31).

RFCs: 9293 (the machine), 7323 (window scale, timestamps, PAWS), 6298 (RTO), 5681 and 6582
(congestion control, fast retransmit, NewReno), 2018 (SACK blocks), 5961 (RST/SYN/ACK
hardening), 6528 (ISN, see isn.py), 1122 (delayed ACK, keep-alive).
"""

from __future__ import annotations

import enum
from typing import ClassVar

from ...counters import Counters
from .config import TcpConfig
from .congestion import CongestionControl, make_congestion
from .events import Closed, CloseReason, Connected, DataReceived, EofReceived, SendSpace, TcpEvent
from .reassembly import Reassembler
from .recovery import LossRecovery
from .recvbuf import RecvBuffer
from .rtt import RttEstimator
from .sack import SackScoreboard
from .segment import ACK, CE, CWR, ECE, ECT_0, FIN, PSH, RST, SYN, TcpOptions, TcpSegment
from .sendbuf import SendBuffer

__all__ = ["CloseReason", "TcpConnection", "TcpState"]

MASK = 0xFFFFFFFF
HALF = 0x80000000
WRAP = 0x100000000

# RFC 9293 (3.7.1): the MSS to assume when the peer's SYN carries no MSS option.
DEFAULT_MSS = 536
# RFC 7323 (3.2): TSopt (10) plus two NOPs of alignment on every segment.
TS_OPTION_LEN = 12
# RFC 7323 (5.5): TS.Recent is invalid after 24 days of idleness.
PAWS_IDLE = 24 * 24 * 3600.0
# Persist timer bounds (Linux TCP_RTO_MIN / TCP_RTO_MAX for probes).
PERSIST_MIN = 0.2
MAX_RST_QUEUE = 8
# At most this many extra duplicate ACKs per output() call.
MAX_DUPACK_BURST = 8


class TcpState(enum.Enum):
    """RFC 9293 (3.3.2) connection states."""

    # Per-state properties, set below (not members: annotations only).
    sends: bool
    receives: bool
    can_queue: bool
    abort_rst: bool

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


CLOSED = TcpState.CLOSED
LISTEN = TcpState.LISTEN
SYN_SENT = TcpState.SYN_SENT
SYN_RECEIVED = TcpState.SYN_RECEIVED
ESTABLISHED = TcpState.ESTABLISHED
FIN_WAIT_1 = TcpState.FIN_WAIT_1
FIN_WAIT_2 = TcpState.FIN_WAIT_2
CLOSE_WAIT = TcpState.CLOSE_WAIT
CLOSING = TcpState.CLOSING
LAST_ACK = TcpState.LAST_ACK
TIME_WAIT = TcpState.TIME_WAIT

# Per-state properties are plain attributes of the enum members: membership tests on a
# frozenset would call Enum.__hash__ (Python code) on every segment.
for _st in TcpState:
    # May still transmit data or a FIN (and retransmit them).
    _st.sends = _st in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK)
    # Segment text is delivered to the application (RFC 9293 3.10.7.4, seventh).
    _st.receives = _st in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2)
    # The application may still queue data.
    _st.can_queue = _st in (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT)
    # An abort sends a RST (RFC 9293 3.10.5).
    _st.abort_rst = _st in (SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT)
del _st

# Flags that must be exactly ACK for the fast path (no SYN, FIN, RST, URG).
_FAST_MASK = SYN | FIN | RST | ACK | 0x20

_COUNTER_NAMES = (
    "segments_in",
    "segments_out",
    "retransmits",
    "fast_retransmits",
    "timeouts",
    "pmtu_reductions",
    "ooo_segments",
    "dup_segments",
    "dropped_unacceptable",
    "dropped_bad_ack",
    "dropped_paws",
    "dropped_no_ack",
    "dropped_ooo_full",
    "rst_received",
    "time_wait_rst_ignored",
    "rst_sent",
    "challenge_acks",
    "challenge_acks_suppressed",
    "challenge_acks_suppressed_global",
    "dropped_closed",
    "dropped_syn_sent",
    "trimmed_beyond_window",
    "dup_acks",
    "partial_acks",
    "recoveries",
    "zero_window_probes",
    "keepalive_probes",
    "window_updates",
    "delayed_acks",
    "pure_acks_sent",
    "sack_blocks_rx",
    "sack_blocks_invalid",
    "dsack_rx",
    "sack_recoveries",
    "sack_retransmits",
    "sack_reneging",
    "rto_zero_window_probes",
    "rack_recoveries",
    "rack_reo_timeouts",
    "tlp_probes",
    "tlp_recoveries",
    "spurious_rto",
    "dsack_sent",
    "ecn_ce_rx",
    "ecn_ece_rx",
    "ecn_reductions",
    "ecn_cwr_sent",
)


def _signed(delta: int) -> int:
    """A difference of two sequence numbers, taken mod 2**32 into -2**31 .. 2**31-1: the
    one place where wrap-around is undone (RFC 9293 3.4)."""
    delta &= MASK
    return delta - WRAP if delta >= HALF else delta


class _Arrival:
    """A segment in a synchronized state as the steps of RFC 9293 (3.10.7.4) see it: its
    offset from RCV.NXT and, once trimmed to the window, its start, text and SYN/FIN."""

    __slots__ = ("d", "seq", "payload", "plen", "syn", "fin", "wnd")

    def __init__(
        self, d: int, seq: int, payload: bytes | memoryview, syn: int, fin: int, wnd: int
    ) -> None:
        self.d = d  # SEG.SEQ - RCV.NXT
        self.seq = seq  # absolute sequence number of the first byte of text (after trimming)
        self.payload = payload
        self.plen = len(payload)
        self.syn = syn
        self.fin = fin
        self.wnd = wnd  # RCV.WND


def _window_shift(recv_buffer: int) -> int:
    """RFC 7323 (2.3): the smallest shift that lets the buffer fit the 16-bit field."""
    shift = 0
    while shift < 14 and (recv_buffer >> shift) > 0xFFFF:
        shift += 1
    return shift


def rcv_wscale_for(cfg: TcpConfig) -> int:
    """The window scale we offer: RFC 7323 (2.2) fixes it at the SYN, so it must fit the
    largest window autotuning may reach (as Linux sizes it from tcp_rmem[2])."""
    rmax = cfg.recv_buffer_max
    return _window_shift(rmax if rmax > cfg.recv_buffer else cfg.recv_buffer)


class TcpConnection:
    """One TCP connection (TCB). Build with ``connect()`` or ``accept_syn()``."""

    __slots__ = (
        "cfg",
        "local_ip",
        "local_port",
        "remote_ip",
        "remote_port",
        "state",
        "counters",
        "rtt",
        "cc",
        # send sequence space (absolute, 0 = our SYN)
        "iss",
        "snd_una",
        "snd_nxt",
        "snd_max",
        "snd_wnd",
        "max_snd_wnd",
        "snd_wl1",
        "snd_wl2",
        "snd_mss",
        "seg_mss",
        "snd_wscale",
        "_sbuf",
        "_sbuf_base",
        "_data_end",
        "_fin_abs",
        "_snd_sml",
        # receive sequence space (absolute, 0 = peer's SYN)
        "irs",
        "rcv_nxt",
        "rcv_adv",
        "rcv_wscale",
        "_rcv_wscale_offer",
        "_rbuf",
        "_rcv_space",
        "_rcv_space_max",
        "_rcv_space_mark",
        "_ooo",
        "_rcv_fin_abs",
        "_rcv_mss",
        "_rcv_unacked",
        "_fin_received",
        # options
        "peer_mss",
        "sack_ok",
        "ts_ok",
        "ts_recent",
        "ts_recent_age",
        "_ts_offset",
        "_last_ack_sent",
        "_syn_window",
        # ACK / timers
        "_ack_now",
        "_ack_due",
        "_dupacks_owed",
        "_delack_at",
        "_rtx_at",
        "_persist_at",
        "_persist_backoff",
        "_probe_due",
        "_probes_unanswered",
        "_tw_at",
        "_last_rx",
        "_ka_probes",
        "_retries",
        "_una_since",
        "_timed_seq",
        "_timed_at",
        "_rtx_tsval",
        # loss recovery (NewReno / RFC 6675 / RACK-TLP)
        "recovery",
        # ECN (RFC 3168)
        "ecn_ok",
        "_ece_pending",
        "_cwr_pending",
        "_ecn_high",
        # challenge ACK rate limit
        "_chal_second",
        "_chal_count",
        # output side
        "_rst_queue",
        "_events",
        "_data_pending",
        "_space_pending",
        "space_wanted",
        "_closed_emitted",
        "_active_open",
        "bytes_sent",
        "bytes_retrans",
        "bytes_acked",
        "bytes_received",
    )

    #: Take in-order ESTABLISHED segments by header prediction (:meth:`_predicted`). The
    #: exact-segment tests turn it off in a subclass to compare with the full processing.
    header_prediction: ClassVar[bool] = True

    def __init__(
        self,
        cfg: TcpConfig,
        local_ip: bytes,
        lport: int,
        remote_ip: bytes,
        rport: int,
        iss: int,
        now: float,
    ) -> None:
        self.cfg = cfg
        self.local_ip = local_ip
        self.local_port = lport
        self.remote_ip = remote_ip
        self.remote_port = rport
        self.state = CLOSED
        self.counters = Counters.zeros(_COUNTER_NAMES)
        self.rtt = RttEstimator(cfg.rto_initial, cfg.rto_min, cfg.rto_max)
        self.cc: CongestionControl | None = None

        self.iss = iss & MASK
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_max = 0
        self.snd_wnd = 0
        self.max_snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.snd_mss = DEFAULT_MSS
        #: The MSS in RFC 6691's sense (data behind a bare 20-byte TCP header): the
        #: smaller of the peer's and ours, lowered by the path MTU. snd_mss is it less
        #: the options every segment carries; a TSO cut uses it.
        self.seg_mss = DEFAULT_MSS
        self.snd_wscale = 0
        self._sbuf = SendBuffer(cfg.send_buffer)
        self._sbuf_base = 1
        self._data_end = 1  # SND sequence number after the last byte queued
        self._fin_abs: int | None = None
        self._snd_sml = 0  # end of the last sub-MSS segment sent (Minshall's Nagle)

        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0
        self.rcv_wscale = 0
        self._rcv_wscale_offer = rcv_wscale_for(cfg) if cfg.window_scale else None
        self._rbuf = RecvBuffer()
        #: The receive buffer's size now (autotuning grows it up to _rcv_space_max) and
        #: RCV.NXT when it last grew.
        self._rcv_space = cfg.recv_buffer
        self._rcv_space_max = cfg.recv_buffer_max if cfg.window_scale else 0
        self._rcv_space_mark = 0
        self._ooo = Reassembler(cfg.max_ooo_segments)
        self._rcv_fin_abs: int | None = None
        self._rcv_mss = DEFAULT_MSS
        self._rcv_unacked = 0
        self._fin_received = False

        self.peer_mss = DEFAULT_MSS
        self.sack_ok = False
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_age = now
        # RFC 7323 (5.4) / RFC 9293: a per-connection random-looking timestamp offset.
        self._ts_offset = self.ts_offset_for(iss)
        self._last_ack_sent = 0
        self._syn_window = min(cfg.recv_buffer, 0xFFFF)

        self._ack_now = False
        self._ack_due = False
        self._dupacks_owed = 0
        self._delack_at: float | None = None
        self._rtx_at: float | None = None
        self._persist_at: float | None = None
        self._persist_backoff = 0
        self._probe_due = False
        self._probes_unanswered = 0
        self._tw_at: float | None = None
        self._last_rx = now
        self._ka_probes = 0
        self._retries = 0
        self._una_since = now
        self._timed_seq: int | None = None
        self._timed_at = 0.0
        self._rtx_tsval: int | None = None  # our TSval on the latest retransmission

        self.recovery = LossRecovery(self.counters)
        self.ecn_ok = False  # RFC 3168 (6.1.1): both SYNs agreed on ECN
        self._ece_pending = False  # a CE arrived: ECE on our ACKs until the peer's CWR
        self._cwr_pending = False  # we reduced cwnd for an ECE: CWR on the next new data
        self._ecn_high = 0  # SND.MAX at the last ECE reduction (once per window)

        self._chal_second = -1
        self._chal_count = 0

        self._rst_queue: list[TcpSegment] = []
        self._events: list[TcpEvent] = []
        self._data_pending = 0
        self._space_pending = False
        self._closed_emitted = False
        #: SendSpace events are wanted: someone has data waiting for buffer space. The
        #: asyncio transport keeps it (True only while its own buffer holds data); the
        #: default gives every one.
        self.space_wanted = True
        self._active_open = False
        self.bytes_sent = 0
        self.bytes_retrans = 0
        self.bytes_acked = 0
        self.bytes_received = 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def connect(
        cls,
        cfg: TcpConfig,
        local_ip: bytes,
        lport: int,
        remote_ip: bytes,
        rport: int,
        iss: int,
        now: float,
    ) -> TcpConnection:
        """Active open: the SYN is emitted by the next ``output(now)``."""
        conn = cls(cfg, local_ip, lport, remote_ip, rport, iss, now)
        conn.state = SYN_SENT
        conn._active_open = True
        return conn

    @classmethod
    def accept_syn(
        cls,
        cfg: TcpConfig,
        local_ip: bytes,
        lport: int,
        remote_ip: bytes,
        rport: int,
        syn: TcpSegment,
        iss: int,
        now: float,
    ) -> TcpConnection:
        """Passive open from a SYN that reached a listener; the SYN-ACK comes from ``output``."""
        conn = cls(cfg, local_ip, lport, remote_ip, rport, iss, now)
        conn.state = SYN_RECEIVED
        conn.irs = syn.seq & MASK
        conn.rcv_nxt = 1
        conn._negotiate(syn.options, now, passive=True)
        # RFC 3168 (6.1.1): an ECN-setup SYN carries ECE and CWR.
        conn.ecn_ok = cfg.ecn_accept and syn.flags & (ECE | CWR) == ECE | CWR
        # RFC 7323 (2.2): the window in a SYN is never scaled.
        conn.snd_wnd = syn.window
        conn.max_snd_wnd = syn.window
        conn.snd_wl1 = 0
        conn.snd_wl2 = 0
        conn.rcv_adv = 1 + conn._syn_window
        conn._ack_now = True
        # Text in a SYN is not accepted before the handshake completes (it is retransmitted).
        return conn

    @classmethod
    def from_cookie(
        cls,
        cfg: TcpConfig,
        local_ip: bytes,
        lport: int,
        remote_ip: bytes,
        rport: int,
        ack: TcpSegment,
        iss: int,
        mss: int,
        now: float,
        wscale: int | None = None,
        sack: bool = False,
    ) -> TcpConnection:
        """Passive open from the ACK that completes a SYN-cookie handshake (RFC 4987 (3.6)).

        ``iss`` is the validated cookie (SEG.ACK - 1), ``mss`` the MSS it encodes; the
        peer's window scale and SACK-permitted come from the TSecr bits when it uses
        timestamps (see syncookies.py), else they are off. The ACK itself is processed, so
        the connection is ESTABLISHED (or CLOSE_WAIT, with a FIN) on return, with any data
        it carried in the receive buffer.
        """
        conn = cls(cfg, local_ip, lport, remote_ip, rport, iss, now)
        conn.state = SYN_RECEIVED
        conn.irs = (ack.seq - 1) & MASK
        conn.rcv_nxt = 1
        o = ack.options
        ts = o.timestamp if o is not None else None
        syn_opts = TcpOptions(
            mss=mss,
            wscale=wscale,
            sack_permitted=sack,
            timestamp=(ts[0], 0) if ts is not None else None,
        )
        conn._negotiate(syn_opts, now, passive=True)
        conn.rcv_adv = 1 + conn._syn_window
        conn._last_ack_sent = 1
        conn.snd_nxt = conn.snd_max = 1  # the SYN-ACK was sent (statelessly)
        conn.on_segment(ack, now)
        return conn

    def set_congestion(self, name: str) -> None:
        """Switch the congestion control (setsockopt TCP_CONGESTION); windows carry over.

        Raises ValueError for an unknown name.
        """
        if name.strip().lower() == "reno":
            name = "newreno"  # Linux's name for the same algorithm
        new = make_congestion(name, self.snd_mss, self.cfg.initial_cwnd_segments)
        self.cfg.congestion = new.name
        old = self.cc
        if old is not None:
            new.cwnd = old.cwnd
            new.ssthresh = old.ssthresh
            self.cc = new

    @staticmethod
    def ts_offset_for(iss: int) -> int:
        """The timestamp clock offset a connection with initial sequence ``iss`` uses."""
        return (iss * 2654435761) & MASK

    # ------------------------------------------------------------------ application calls

    def send_space(self) -> int:
        """Bytes ``send()`` would accept now."""
        if not self.state.can_queue or self._fin_abs is not None:
            return 0
        return self._sbuf.space

    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """Queue application data; returns how many bytes were accepted (0 after shutdown)."""
        if not self.state.can_queue or self._fin_abs is not None:
            return 0
        n = self._sbuf.append(data)
        self._data_end += n
        return n

    @property
    def send_queued(self) -> int:
        """Bytes queued and not yet acknowledged (the asyncio write buffer size)."""
        return len(self._sbuf)

    @property
    def recv_available(self) -> int:
        """Bytes waiting in the receive buffer."""
        return len(self._rbuf)

    def recv(self, max_bytes: int | None = None) -> bytes:
        """Take up to ``max_bytes`` (all if None) from the receive buffer; reopens the window."""
        data = self._rbuf.take(max_bytes)
        if data:
            self._maybe_window_update()
        return data

    def recv_views(self, max_bytes: int | None = None) -> list[bytes | memoryview]:
        """As :meth:`recv`, as the received chunks themselves (views of the frames they
        came in, not copied): for a reader that copies them into its own buffer anyway."""
        views = self._rbuf.take_views(max_bytes)
        if views:
            self._maybe_window_update()
        return views

    def shutdown(self, now: float) -> None:
        """Half-close: a FIN follows all queued data; receiving continues."""
        st = self.state
        if self._fin_abs is not None or not st.can_queue:
            return
        self._fin_abs = self._sbuf_base + len(self._sbuf)
        if st is ESTABLISHED:
            self.state = FIN_WAIT_1
        elif st is CLOSE_WAIT:
            self.state = LAST_ACK
        # SYN_SENT / SYN_RECEIVED: RFC 9293 (3.10.4) queue the close until ESTABLISHED.

    def abort(self, now: float) -> None:
        """RST now (where the peer knows us) and go to CLOSED; Closed("aborted")."""
        if self.state.abort_rst:
            # RFC 9293 (3.10.5): <SEQ=SND.NXT><CTL=RST>; ACK as Linux does.
            self._queue_rst(self._wire_snd(self.snd_max), self._wire_rcv(self.rcv_nxt), True)
        self._die(CloseReason.ABORTED)

    def accepts_new_syn(self, seg: TcpSegment) -> bool:
        """True if ``seg`` is a SYN that may reopen this 4-tuple although we are in TIME-WAIT.

        RFC 9293 (3.10.7.4) / RFC 6191: allowed when the new SYN's sequence number is above
        our RCV.NXT, or (with timestamps) its TSval is above TS.Recent. The glue then drops
        this TCB and treats the SYN as a new one for the listener; otherwise it passes the
        segment to ``on_segment`` (which answers with an ACK).
        """
        if self.state is not TIME_WAIT or seg.flags & (SYN | ACK | RST) != SYN:
            return False
        if self.ts_ok and seg.options is not None and seg.options.timestamp is not None:
            return 0 < ((seg.options.timestamp[0] - self.ts_recent) & MASK) < HALF
        return 0 < ((seg.seq - self.irs - self.rcv_nxt) & MASK) < HALF

    def take_events(self) -> list[TcpEvent]:
        """Events since the last call, in order."""
        if self._data_pending:  # (_flush_data_event, inlined: once per receive batch)
            self._events.append(DataReceived(self._data_pending))
            self._data_pending = 0
        if self._space_pending:
            self._space_pending = False
            self._events.append(SendSpace())
        ev = self._events
        if ev:
            self._events = []
        return ev

    # ------------------------------------------------------------------ helpers

    def _wire_snd(self, n: int) -> int:
        return (self.iss + n) & MASK

    def _wire_rcv(self, n: int) -> int:
        return (self.irs + n) & MASK

    def _ts_val(self, now: float) -> int:
        # RFC 7323 (5.4): a 1 ms clock, offset per connection.
        return (int(now * 1000.0) + self._ts_offset) & MASK

    def _emit(self, ev: TcpEvent) -> None:
        self._flush_data_event()
        self._events.append(ev)

    def _flush_data_event(self) -> None:
        if self._data_pending:
            self._events.append(DataReceived(self._data_pending))
            self._data_pending = 0

    def _die(self, reason: CloseReason) -> None:
        self.state = CLOSED
        self._rtx_at = self._persist_at = self._delack_at = self._tw_at = None
        self._ack_now = self._ack_due = self._probe_due = False
        self.recovery.rtx_one = False
        self._ooo.clear()
        if not self._closed_emitted:
            self._closed_emitted = True
            self._emit(Closed(reason))

    def _enter_time_wait(self, now: float) -> None:
        self.state = TIME_WAIT
        self._rtx_at = self._persist_at = None
        self.recovery.rtx_one = False
        # RFC 9293 (3.10.7.4): TIME-WAIT lasts 2*MSL.
        self._tw_at = now + 2.0 * self.cfg.msl
        if not self._closed_emitted:
            self._closed_emitted = True
            self._emit(Closed(CloseReason.NORMAL))

    def _queue_rst(self, seq: int, ack: int, with_ack: bool) -> None:
        if len(self._rst_queue) >= MAX_RST_QUEUE:
            return
        flags = RST | ACK if with_ack else RST
        self._rst_queue.append(
            TcpSegment(
                self.local_port,
                self.remote_port,
                seq=seq,
                ack=ack if with_ack else 0,
                flags=flags,
                window=0,
            )  # fmt: skip
        )

    def _challenge_ack(self, now: float) -> None:
        # RFC 5961 (7): rate-limit challenge ACKs.
        sec = int(now)
        if sec != self._chal_second:
            self._chal_second = sec
            self._chal_count = 0
        if self._chal_count >= self.cfg.challenge_ack_limit:
            self.counters["challenge_acks_suppressed"] += 1
            return
        limiter = self.cfg.challenge_limiter
        if limiter is not None and not limiter.allow(now):
            self.counters["challenge_acks_suppressed_global"] += 1
            return
        self._chal_count += 1
        self.counters["challenge_acks"] += 1
        self._ack_now = True

    def _negotiate(self, opts: TcpOptions | None, now: float, passive: bool) -> None:
        """Adopt the options of the peer's SYN (RFC 9293 3.7.1, RFC 7323, RFC 2018)."""
        cfg = self.cfg
        o = opts if opts is not None else TcpOptions()
        self.peer_mss = o.mss if o.mss else DEFAULT_MSS
        # RFC 7323 (2.2): scaling is in effect only if both SYNs carried the option.
        if self._rcv_wscale_offer is not None and o.wscale is not None:
            self.snd_wscale = o.wscale
            self.rcv_wscale = self._rcv_wscale_offer
        else:
            self.snd_wscale = 0
            self.rcv_wscale = 0
            self._rcv_wscale_offer = None
            self._rcv_space_max = 0  # no window above 64 KiB to grow into
        self.sack_ok = cfg.sack and o.sack_permitted
        self.ts_ok = cfg.timestamps and o.timestamp is not None
        if self.ts_ok and o.timestamp is not None:
            self.ts_recent = o.timestamp[0]
            self.ts_recent_age = now
        self._set_seg_mss(min(self.peer_mss, cfg.mss))
        self._rcv_mss = min(DEFAULT_MSS, self.snd_mss)
        # RFC 8985 (2.2): RACK-TLP needs SACK.
        self.recovery.enable_rack(cfg.rack and self.sack_ok)

    def _become_established(self, now: float) -> None:
        self.state = ESTABLISHED
        # RFC 6928 (2) / RFC 5681 (3.1): after a lost SYN or SYN-ACK the initial window
        # is one segment.
        iw = 1 if self.counters["retransmits"] else self.cfg.initial_cwnd_segments
        if self.counters["retransmits"]:
            # RFC 6298 (5.7): after a lost SYN (or SYN-ACK) and no RTT sample, the RTO
            # for the data is 3 s.
            self.rtt.syn_fallback()
        self.cc = make_congestion(self.cfg.congestion, self.snd_mss, iw)
        self._retries = 0
        self._emit(Connected())
        if self._fin_abs is not None:
            self.state = FIN_WAIT_1

    # ------------------------------------------------------------------ receive window

    def _advertise(self) -> tuple[int, int]:
        """(16-bit window field, right edge it announces); ``rcv_adv`` moves on send only."""
        shift = self.rcv_wscale
        rcv_nxt = self.rcv_nxt
        space = self._rcv_space
        if (
            space < self._rcv_space_max
            and rcv_nxt - self._rcv_space_mark >= space
            and not self._rbuf
        ):
            space = self._grow_rcv_space(space)
        free = space - len(self._rbuf)
        edge = rcv_nxt + (free if free > 0 else 0)
        adv = self.rcv_adv
        # RFC 9293 (3.8.6.2.2): receiver SWS avoidance, move the right edge only in steps
        # of at least min(RCV.BUFF/2, MSS); RFC 9293 (3.8.6): never shrink the window.
        if edge - adv < min(space >> 1, self.cfg.mss):
            edge = adv
        wnd = edge - rcv_nxt
        if wnd < 0:
            wnd = 0
        field = wnd >> shift
        if field > 0xFFFF:
            field = 0xFFFF
        right = rcv_nxt + (field << shift)
        if right < adv:
            field += 1  # scaling would round the edge below what we promised
            right = rcv_nxt + (field << shift)
        return field, (right if right > adv else adv)

    def _maybe_window_update(self) -> None:
        if not self.state.receives:
            return
        old = self.rcv_adv - self.rcv_nxt
        space = self._rcv_space
        free = space - len(self._rbuf)
        grow = self.rcv_nxt + free - self.rcv_adv
        thresh = min(space >> 1, self.cfg.mss)
        # RFC 9293 (3.8.6.2.2): tell the peer once the window opened by a useful amount
        # after it was small.
        if grow >= thresh and old < (space >> 1):
            self._ack_now = True
            self.counters["window_updates"] += 1

    def _grow_rcv_space(self, space: int) -> int:
        """Receive-window autotuning (in the spirit of Linux's tcp_rcv_space_adjust, the
        dynamic right-sizing of Fisher et al.): double the buffer, up to its maximum, once
        the peer has sent a whole buffer's worth since it last grew and the application
        has taken everything (the caller checked both). A reader that keeps up thus gets a
        window the sender can keep full; one that does not keeps the memory it is given.
        Called when a segment is about to announce the window."""
        space = min(space << 1, self._rcv_space_max)
        self._rcv_space = space
        self._rcv_space_mark = self.rcv_nxt
        self.counters["rcv_space_grown"] += 1
        return space

    # ------------------------------------------------------------------ segment arrival

    def on_segment(self, seg: TcpSegment, now: float) -> None:
        """Process one received segment for this connection (RFC 9293 3.10.7).

        In a synchronized state the steps of RFC 9293 (3.10.7.4) run in order, one method
        each; a step that consumes the segment returns False and ends the processing.
        """
        st = self.state
        self.counters["segments_in"] += 1
        if self.ecn_ok and (seg.ecn == CE or seg.flags & (ECE | CWR)):
            self._ecn_input(seg, now)
        if st is ESTABLISHED and seg.flags & _FAST_MASK == ACK and self.header_prediction:
            if self._fast_path(seg, now):
                return
        if st is CLOSED or st is LISTEN:
            self.counters["dropped_closed"] += 1
            return
        self._last_rx = now
        self._ka_probes = 0
        if st is SYN_SENT:
            self._rx_syn_sent(seg, now)
            return
        opts = seg.options
        ts = opts.timestamp if (opts is not None and self.ts_ok) else None
        if not self._check_paws(seg, ts, now):
            return
        arr = self._check_acceptable(seg, now)  # first: sequence number
        if arr is None:
            return
        self._trim_to_window(arr)
        if seg.flags & RST:  # second: RST
            self._rx_rst(arr, now)
            return
        # Third (security) does not apply.
        if arr.syn:  # fourth: SYN in a synchronized state, RFC 5961 (4)
            self._challenge_ack(now)
            return
        if not self._rx_ack(seg, arr, ts, now):  # fifth: ACK
            return
        self._update_ts_recent(ts, arr.seq, now)
        if not self._our_fin_acked(now):
            return
        # Sixth (URG) is ignored.
        self._rx_segment_text(arr, now)  # seventh: text
        self._rx_segment_fin(arr, now)  # eighth: FIN

    def _check_paws(self, seg: TcpSegment, ts: tuple[int, int] | None, now: float) -> bool:
        """RFC 7323 (5.3) PAWS: a segment with an older timestamp than TS.Recent is a
        duplicate from an earlier incarnation of the sequence space; drop it, ACK it."""
        if ts is None or seg.flags & RST or ((ts[0] - self.ts_recent) & MASK) < HALF:
            return True
        if now - self.ts_recent_age > PAWS_IDLE:
            self.ts_recent = ts[0]  # RFC 7323 (5.5): TS.Recent went stale
            return True
        self.counters["dropped_paws"] += 1
        self._ack_now = True
        return False

    def _check_acceptable(self, seg: TcpSegment, now: float) -> _Arrival | None:
        """RFC 9293 (3.10.7.4) first: the four cases of the acceptability test. An
        unacceptable segment is dropped (and ACKed unless it is a RST): None."""
        st = self.state
        flags = seg.flags
        rcv_nxt = self.rcv_nxt
        d = _signed(seg.seq - self.irs - rcv_nxt)
        syn = flags & SYN
        if syn and st is SYN_RECEIVED and d == -1 and flags & ACK:
            # Simultaneous open (RFC 9293 Figure 7): the peer's SYN-ACK repeats its SYN,
            # which we already have; only its ACK (and any text) is new.
            syn = 0
            d = 0
        fin = flags & FIN
        wnd = self.rcv_adv - rcv_nxt
        if wnd < 0:
            wnd = 0
        arr = _Arrival(d, rcv_nxt + d, seg.payload, syn, fin, wnd)
        seg_len = arr.plen + (1 if syn else 0) + (1 if fin else 0)
        if seg_len == 0:
            ok = d == 0 if wnd == 0 else 0 <= d < wnd
        elif wnd == 0:
            # RFC 9293 (3.10.7.4): with a zero window still take valid ACKs (and RSTs) from
            # a segment at RCV.NXT; its text is dropped below.
            ok = d == 0
        else:
            ok = (0 <= d < wnd) or (0 <= d + seg_len - 1 < wnd)
        if ok:
            return arr
        if flags & RST:
            self.counters["dropped_unacceptable"] += 1
            return None
        if d < 0:
            self.counters["dup_segments"] += 1
            if arr.plen and self.sack_ok:
                # RFC 2883 (4.1.1): report the duplicate in a D-SACK block.
                self._ooo.note_duplicate(arr.seq, arr.seq + arr.plen)
        else:
            self.counters["dropped_unacceptable"] += 1
        if st is TIME_WAIT and fin:
            # RFC 9293 (3.10.7.4): a retransmitted FIN restarts the 2 MSL timeout.
            self._tw_at = now + 2.0 * self.cfg.msl
        self._ack_now = True
        return None

    def _trim_to_window(self, arr: _Arrival) -> None:
        """Cut old bytes at the front and bytes beyond the window at the back."""
        rcv_nxt = self.rcv_nxt
        if arr.d < 0:
            cut = -arr.d
            if arr.syn:
                arr.syn = 0
                cut -= 1
            if cut:
                arr.payload = arr.payload[cut:]
                arr.plen -= cut
                if self.sack_ok:
                    # RFC 2883 (4.1.1): the part already received is a D-SACK block.
                    self._ooo.note_duplicate(rcv_nxt - cut, rcv_nxt)
            arr.seq = rcv_nxt
        if arr.plen and arr.seq + arr.plen > rcv_nxt + arr.wnd:
            keep = rcv_nxt + arr.wnd - arr.seq
            if keep < 0:
                keep = 0
            arr.payload = arr.payload[:keep]
            arr.plen = keep
            arr.fin = 0
            self._ack_now = True  # tell the sender at once that text was cut off
            self.counters["trimmed_beyond_window"] += 1

    def _rx_rst(self, arr: _Arrival, now: float) -> None:
        """RFC 9293 (3.10.7.4) second, with RFC 5961 (3.2): reset only on an exact match
        of RCV.NXT, else send a challenge ACK."""
        self.counters["rst_received"] += 1
        if self.state is TIME_WAIT and self.cfg.rfc1337:
            # RFC 1337 (TIME-WAIT assassination): ignore RST in TIME-WAIT, so an old
            # duplicate cannot cut the 2*MSL wait short (as Linux's tcp_rfc1337=1).
            self.counters["time_wait_rst_ignored"] += 1
            return
        if arr.d != 0:
            self._challenge_ack(now)
            return
        st = self.state
        if st is SYN_RECEIVED:
            # RFC 9293 (3.10.7.4): from an active (simultaneous) open the connection was
            # refused; a passive one just goes away (the listener stays).
            self._die(CloseReason.REFUSED if self._active_open else CloseReason.RESET)
        elif st is TIME_WAIT:
            # Everything was delivered both ways: nothing was lost.
            self._die(CloseReason.NORMAL)
        elif (
            (st is CLOSING or st is LAST_ACK)
            and self._fin_abs is not None
            and (self.snd_una >= self._fin_abs)
        ):
            # Everything but our FIN was delivered both ways: nothing was lost.
            self._die(CloseReason.NORMAL)
        else:
            self._die(CloseReason.RESET)

    def _rx_ack(
        self, seg: TcpSegment, arr: _Arrival, ts: tuple[int, int] | None, now: float
    ) -> bool:
        """RFC 9293 (3.10.7.4) fifth: the ACK field. False when the segment is dropped."""
        if not seg.flags & ACK:
            self.counters["dropped_no_ack"] += 1
            return False
        a = _signed(seg.ack - self.iss - self.snd_una)
        ack = self.snd_una + a
        if self.state is SYN_RECEIVED and not self._ack_syn_received(seg, arr.seq, ack, now):
            return False
        snd_una = self.snd_una
        if ack <= snd_una:
            return self._rx_old_ack(seg, arr, ack, now)
        if ack > self.snd_max:
            # RFC 9293 (3.10.7.4): ACK of something not yet sent: ACK and drop.
            self.counters["dropped_bad_ack"] += 1
            self._ack_now = True
            return False
        opts = seg.options
        self._ack_new(ack, seg.window, opts.sack_blocks if opts is not None else (), arr.seq, ts, now)
        return True

    def _ack_syn_received(self, seg: TcpSegment, seq: int, ack: int, now: float) -> bool:
        """SYN-RECEIVED: an ACK of our SYN establishes the connection; any other ACK is
        answered with <SEQ=SEG.ACK><CTL=RST> (RFC 9293 3.10.7.4)."""
        if not self.snd_una < ack <= self.snd_max:
            self._queue_rst(seg.ack, 0, False)
            self.counters["dropped_bad_ack"] += 1
            return False
        self.snd_una = ack
        # A simultaneous open rewound SND.NXT to send the SYN again: the ACK of the first
        # SYN may come before output() ran (found by anp sim).
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        self._sample_timed_rtt(ack, now)
        self._rtx_at = None if ack >= self.snd_max else now + self.rtt.rto
        self.snd_wnd = seg.window << self.snd_wscale
        self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        self._become_established(now)
        return True

    def _rx_old_ack(self, seg: TcpSegment, arr: _Arrival, ack: int, now: float) -> bool:
        """An ACK at or below SND.UNA: maybe a duplicate ACK, maybe a window update."""
        snd_una = self.snd_una
        # RFC 5961 (5.2): an ACK older than SND.UNA - MAX.SND.WND is dropped with an ACK.
        if ack < snd_una - self.max_snd_wnd:
            self.counters["dropped_bad_ack"] += 1
            self._ack_now = True
            return False
        win = seg.window << self.snd_wscale
        if ack == snd_una:
            # The peer is alive: zero-window probes are being answered.
            self._probes_unanswered = 0
        new_sack = 0
        opts = seg.options
        if self.sack_ok and opts is not None and opts.sack_blocks:
            new_sack = self._take_sack(opts.sack_blocks)
        # RFC 5681 (2): the definition of a duplicate ACK; RFC 6675 (2) adds an ACK whose
        # SACK blocks report new data.
        if (
            ack == snd_una
            and snd_una < self.snd_max
            and (
                (arr.plen == 0 and not arr.fin and win == self.snd_wnd and win != 0) or new_sack > 0
            )
        ):
            self.recovery.on_dup_ack(
                snd_una, self.snd_max, self.sack_ok, self.snd_mss, self.cc, now
            )
        self._update_snd_wnd(win, arr.seq, ack)
        rack = self.recovery.rack
        if rack is not None and (new_sack > 0 or self.recovery.sb.dsack != rack.dsack_seen):
            # New SACKed data, or a D-SACK (RFC 8985 6.2 step 4, 7.4.2): RACK looks at it.
            self._rack_ack(opts.timestamp if (opts is not None and self.ts_ok) else None, now,
                           False)  # fmt: skip
        return True

    def _update_ts_recent(self, ts: tuple[int, int] | None, seq: int, now: float) -> None:
        # RFC 7323 (4.3): TS.Recent comes from the segment that covers Last.ACK.sent.
        if (
            ts is not None
            and seq <= self._last_ack_sent
            and ((ts[0] - self.ts_recent) & MASK) < HALF
        ):
            self.ts_recent = ts[0]
            self.ts_recent_age = now

    def _our_fin_acked(self, now: float) -> bool:
        """RFC 9293 (3.10.7.4) fifth, per state: our FIN acknowledged moves FIN-WAIT-1 to
        FIN-WAIT-2, CLOSING to TIME-WAIT and LAST-ACK to CLOSED. False once closed."""
        st = self.state
        if st is CLOSED:
            return False
        if self._fin_abs is not None and self.snd_una > self._fin_abs:
            if st is FIN_WAIT_1:
                self.state = FIN_WAIT_2
            elif st is CLOSING:
                self._enter_time_wait(now)
                return False
            elif st is LAST_ACK:
                self._die(CloseReason.NORMAL)
                return False
        return True

    def _rx_segment_text(self, arr: _Arrival, now: float) -> None:
        """RFC 9293 (3.10.7.4) seventh: text is taken only in states that receive."""
        if not arr.plen:
            return
        if self.state.receives:
            self._rx_text(arr.seq, arr.payload, arr.plen, now)
        else:
            self.counters["dropped_unacceptable"] += 1

    def _rx_segment_fin(self, arr: _Arrival, now: float) -> None:
        """RFC 9293 (3.10.7.4) eighth: a FIN counts once every byte before it arrived."""
        if arr.fin:
            fin_at = arr.seq + arr.plen
            if fin_at == self.rcv_nxt:
                self._rx_fin(now)
            elif fin_at > self.rcv_nxt:
                self._rcv_fin_abs = fin_at
                if not arr.plen:
                    # RFC 5681 (4.2): out of order, so a duplicate ACK at once (text that
                    # came with it asked for one already in _rx_text).
                    self.counters["ooo_segments"] += 1
                    self._dupacks_owed += 1
                    self._ack_now = True
        elif self._rcv_fin_abs is not None and self._rcv_fin_abs == self.rcv_nxt:
            self._rx_fin(now)

    def _fast_path(self, seg: TcpSegment, now: float) -> bool:
        """``on_segment``'s way into header prediction: the segment's fields, its timestamp
        and SACK blocks, to :meth:`rx_predicted`'s rules."""
        opts = seg.options
        ts = None
        blocks: tuple[tuple[int, int], ...] = ()
        if opts is not None:
            ts = opts.timestamp
            blocks = opts.sack_blocks
        return self._predicted(seg.seq, seg.ack, seg.window, ts, blocks, seg.payload, now)

    def rx_predicted(
        self,
        seq: int,
        ack: int,
        window: int,
        ts: tuple[int, int] | None,
        payload: bytes | memoryview,
        now: float,
    ) -> bool:
        """Header prediction for a segment read straight from a frame (``fastpath.py``):
        flags ACK (PSH allowed), no ECN marks, no option but the timestamp (``ts``). True
        when the segment was taken, with the same state, events and output the full RFC
        9293 processing (``on_segment``) gives; False (nothing changed): use that instead.
        """
        if self.state is not ESTABLISHED:
            return False
        if self._predicted(seq, ack, window, ts, (), payload, now):
            self.counters["segments_in"] += 1
            return True
        return False

    def _predicted(
        self,
        seq: int,
        ack: int,
        window: int,
        ts: tuple[int, int] | None,
        blocks: tuple[tuple[int, int], ...],
        payload: bytes | memoryview,
        now: float,
    ) -> bool:
        """Van Jacobson's header prediction (RFC 9293 3.10.7.4 note) in ESTABLISHED, for a
        segment whose flags are ACK (PSH, ECE, CWR allowed): when it is the next one
        expected and either only acknowledges new data or only carries in-order text, take
        it here in a few steps. Each rule below names the step of the full processing it
        stands for; any other case returns False with nothing changed.
        """
        if self._ooo.items or self._rcv_fin_abs is not None:
            return False  # a hole to fill or a FIN waiting for it: the full text/FIN steps
        rcv_nxt = self.rcv_nxt
        # First (acceptability): SEG.SEQ = RCV.NXT, nothing trimmed.
        if (seq - self.irs - rcv_nxt) & MASK:
            return False
        if self.ts_ok:
            # RFC 7323 (5.3) PAWS: TSval not older than TS.Recent.
            if ts is None or (ts[0] - self.ts_recent) & MASK >= HALF:
                return False
        else:
            ts = None  # a timestamp the SYNs did not agree on is ignored
        plen = len(payload)
        if plen > self.rcv_adv - rcv_nxt:
            return False  # the text must fit the window we advertised
        snd_una = self.snd_una
        # Fifth (ACK): SND.UNA < SEG.ACK <= SND.MAX, or SEG.ACK = SND.UNA with text (so no
        # duplicate ACK to count). (Inlined _signed: the hot path.)
        a = (ack - self.iss - snd_una) & MASK
        if a == 0:
            if not plen or (blocks and self.sack_ok):
                return False  # maybe a duplicate ACK, or new SACK information
        elif a >= HALF or snd_una + a > self.snd_max:
            return False
        self._last_rx = now
        self._ka_probes = 0
        # RFC 7323 (4.3): SEG.SEQ (= RCV.NXT) <= Last.ACK.sent.
        if ts is not None and self._last_ack_sent >= rcv_nxt:
            self.ts_recent = ts[0]
            self.ts_recent_age = now
        if a:
            self._ack_new(snd_una + a, window, blocks, rcv_nxt, ts, now)
        else:
            self._probes_unanswered = 0  # the peer is alive (as _rx_old_ack)
            self._update_snd_wnd(window << self.snd_wscale, rcv_nxt, snd_una)
        if plen:
            self._rx_text(rcv_nxt, payload, plen, now)  # seventh: text
        return True

    def _update_snd_wnd(self, win: int, seq: int, ack: int) -> None:
        """RFC 9293 (3.10.7.4): take the window of a segment newer than the one that last
        set it (SND.WL1 < SEG.SEQ, or equal and SND.WL2 <= SEG.ACK)."""
        wl1 = self.snd_wl1
        if wl1 < seq or (wl1 == seq and self.snd_wl2 <= ack):
            if win != self.snd_wnd:
                self._set_snd_wnd(win, seq, ack)
            else:
                self.snd_wl1 = seq
                self.snd_wl2 = ack

    def _set_snd_wnd(self, win: int, seq: int, ack: int) -> None:
        self.snd_wnd = win
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        if win > self.max_snd_wnd:
            self.max_snd_wnd = win
        if win:
            self._persist_at = None
            self._persist_backoff = 0

    def _ack_new(
        self,
        ack: int,
        window: int,
        blocks: tuple[tuple[int, int], ...],
        seq: int,
        ts: tuple[int, int] | None,
        now: float,
    ) -> None:
        """New data acknowledged: free the buffer, sample RTT, grow cwnd, restart timers.
        ``window`` is the segment's (unscaled) field, ``blocks`` its SACK blocks."""
        snd_una = self.snd_una
        acked = ack - snd_una
        base = self._sbuf_base
        data_end = self._data_end
        freed = (ack if ack < data_end else data_end) - base
        if freed > 0:
            self._sbuf.ack(freed)
            self._sbuf_base = base + freed
            self.bytes_acked += freed
            if self.space_wanted:
                self._space_pending = True
        self.snd_una = ack
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        sb = self.recovery.sb
        if sb.blocks:
            sb.advance(ack)
        if blocks and self.sack_ok:
            self._take_sack(blocks)
        retries = self._retries
        if retries:
            self._retries = 0
            if self.recovery.undo is not None:
                self._settle_timeout(ack, acked, ts, now, retries)
        self._probes_unanswered = 0
        self._una_since = now
        timed = self._timed_seq
        if timed is not None and ack >= timed:
            self._sample_timed_rtt(ack, now)
        elif ts is not None and self._rtx_tsval is not None:
            self._sample_ts_rtt(ts, now)
        self.recovery.on_ack(ack, acked, self.cc, now, self.rtt.srtt)
        # RFC 6298 (5.2)/(5.3): stop the timer when all is acked, else restart it.
        if ack >= self.snd_max:
            self._rtx_at = None
        else:
            self._rtx_at = now + self.rtt.rto
        self._update_snd_wnd(window << self.snd_wscale, seq, ack)
        if self.recovery.rack is not None:
            self._rack_ack(ts, now, True)

    def _sample_timed_rtt(self, ack: int, now: float) -> bool:
        """RFC 6298 (3) with Karn's rule: ``ack`` covers the timed segment, which was never
        retransmitted (retransmitting untimes it): take the RTT sample."""
        if self._timed_seq is None or ack < self._timed_seq:
            return False
        self.rtt.sample(now - self._timed_at)
        self._timed_seq = None
        self._rtx_tsval = None
        return True

    def _sample_ts_rtt(self, ts: tuple[int, int] | None, now: float) -> None:
        """RFC 7323 (4.1): after a retransmission, timestamps tell which transmission an
        ACK answers, so its echo gives an RTT sample where Karn's rule gives none."""
        rtx_tsval = self._rtx_tsval
        if ts is None or rtx_tsval is None or not ts[1] or ((ts[1] - rtx_tsval) & MASK) >= HALF:
            # Only an echo of the latest retransmission (or later) measures this path now:
            # a duplicate answered with an older TS.Recent would give a huge bogus sample.
            return
        rtt = ((self._ts_val(now) - ts[1]) & MASK) / 1000.0
        if rtt <= 3600.0:
            self.rtt.sample(rtt)
            self._rtx_tsval = None

    def _take_sack(self, blocks: tuple[tuple[int, int], ...]) -> int:
        """Feed the peer's SACK blocks (wire numbers) to the scoreboard; new SACKed bytes."""
        una = self.snd_una
        base = self.iss + una
        rel = [(una + _signed(left - base), una + _signed(right - base)) for left, right in blocks]
        sb = self.recovery.sb
        inv, ds = sb.invalid, sb.dsack
        new = sb.update(rel, una, self.snd_max)
        c = self.counters
        c["sack_blocks_rx"] += len(rel)
        c["sack_blocks_invalid"] += sb.invalid - inv
        c["dsack_rx"] += sb.dsack - ds
        return new

    def _rx_text(self, seq: int, payload: bytes | memoryview, plen: int, now: float) -> None:
        rcv_nxt = self.rcv_nxt
        ooo = self._ooo
        if seq == rcv_nxt:
            self._rbuf.append(payload)
            rcv_nxt += plen
            got = plen
            if ooo.items:
                # RFC 5681 (4.2): ACK at once when a segment fills (part of) a gap.
                for chunk in ooo.pop_ready(rcv_nxt):
                    self._rbuf.append(chunk)
                    rcv_nxt += len(chunk)
                    got += len(chunk)
                self._ack_now = True
            self.rcv_nxt = rcv_nxt
            self._data_pending += got
            self.bytes_received += got
            rcv_mss = self._rcv_mss
            if plen > rcv_mss:
                mss = self.cfg.mss
                self._rcv_mss = rcv_mss = plen if plen < mss else mss
            unacked = self._rcv_unacked + plen
            self._rcv_unacked = unacked
            # RFC 1122 (4.2.3.2) / RFC 5681 (4.2): ACK at least every second full segment,
            # otherwise within the delayed-ACK time.
            if unacked >= 2 * rcv_mss:
                self._ack_now = True
            elif not self._ack_due:
                delay = self.cfg.delayed_ack
                if delay:
                    self._ack_due = True
                    self._delack_at = now + delay
                else:
                    self._ack_now = True
        else:
            # RFC 5681 (4.2): out-of-order data is ACKed at once (a duplicate ACK, with SACK).
            self.counters["ooo_segments"] += 1
            self._dupacks_owed += 1
            full_before = ooo.dropped
            if not ooo.add(seq, payload, rcv_nxt, self.rcv_adv):
                if ooo.dropped > full_before:
                    self.counters["dropped_ooo_full"] += 1
                else:
                    self.counters["dup_segments"] += 1
            self._ack_now = True

    def _rx_fin(self, now: float) -> None:
        self.rcv_nxt += 1
        self._rcv_fin_abs = None
        self._fin_received = True
        self._ack_now = True
        self._emit(EofReceived())
        st = self.state
        if st is ESTABLISHED or st is SYN_RECEIVED:
            self.state = CLOSE_WAIT
        elif st is FIN_WAIT_1:
            # Our FIN is not acked yet (else we would be in FIN_WAIT_2): simultaneous close.
            self.state = CLOSING
        elif st is FIN_WAIT_2:
            self._enter_time_wait(now)

    def _rx_syn_sent(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 (3.10.7.3): segment arrives in SYN-SENT."""
        flags = seg.flags
        ack_ok = False
        if flags & ACK:
            a = (seg.ack - self.iss) & MASK
            ack_ok = 0 < a <= self.snd_max
            if not ack_ok:
                if not flags & RST:
                    self._queue_rst(seg.ack, 0, False)
                self.counters["dropped_bad_ack"] += 1
                return
        if flags & RST:
            self.counters["rst_received"] += 1
            # RFC 5961 (3.2) / RFC 9293: in SYN-SENT a RST is valid only if it ACKs our SYN.
            if ack_ok:
                self._die(CloseReason.REFUSED)
            else:
                self.counters["dropped_syn_sent"] += 1
            return
        if not flags & SYN:
            self.counters["dropped_syn_sent"] += 1
            return
        self.irs = seg.seq & MASK
        self.rcv_nxt = 1
        self._negotiate(seg.options, now, passive=False)
        self.rcv_adv = 1 + self._syn_window
        self._ack_now = True
        if ack_ok:
            # RFC 3168 (6.1.1): an ECN-setup SYN-ACK carries ECE but not CWR.
            self.ecn_ok = self.cfg.ecn and flags & (ECE | CWR) == ECE
            self.snd_una = 1
            if self.snd_nxt < 1:
                self.snd_nxt = 1
            self._sample_timed_rtt(1, now)
            self._rtx_at = None
            # RFC 7323 (2.2): the window of a SYN-ACK is not scaled.
            self.snd_wnd = seg.window
            self.max_snd_wnd = seg.window
            self.snd_wl1 = 0
            self.snd_wl2 = 1
            self._become_established(now)
            plen = len(seg.payload)
            if plen:
                self._rx_text(1, seg.payload, plen, now)
            if flags & FIN:
                self._rx_fin(now)
        else:
            # Simultaneous open: answer with SYN-ACK (our SYN again, now with ACK).
            self.state = SYN_RECEIVED
            self.snd_wnd = seg.window
            self.max_snd_wnd = seg.window
            self.snd_nxt = 0

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """The earliest time ``on_timer`` must run, or None."""
        best: float | None = None
        for t in (self._rtx_at, self._persist_at, self._tw_at):
            if t is not None and (best is None or t < best):
                best = t
        if self._ack_due and self._delack_at is not None:
            t = self._delack_at
            if best is None or t < best:
                best = t
        ka = self._keepalive_at() if self.cfg.keepalive else None
        if ka is not None and (best is None or ka < best):
            best = ka
        rack = self.recovery.rack
        if rack is not None and self.state.sends:
            for t in (rack.reo_at, rack.pto_at):
                if t is not None and (best is None or t < best):
                    best = t
        return best

    def _keepalive_at(self) -> float | None:
        cfg = self.cfg
        if not cfg.keepalive or (self.state is not ESTABLISHED and self.state is not CLOSE_WAIT):
            return None
        if self.snd_una < self.snd_max or self._persist_at is not None:
            return None
        return self._last_rx + cfg.keepalive_idle + self._ka_probes * cfg.keepalive_interval

    def on_timer(self, now: float) -> None:
        """Run every timer that is due at ``now``."""
        if self._tw_at is not None and now >= self._tw_at:
            self._tw_at = None
            self.state = CLOSED
            return
        if self.recovery.rack is not None and self.state.sends:
            self._rack_timers(now)  # before the RTO: a due probe re-arms it (RFC 8985 7.3)
        if self._rtx_at is not None and now >= self._rtx_at:
            self._on_rto(now)
            if self.state is CLOSED:
                return
        if self._persist_at is not None and now >= self._persist_at:
            self._on_persist(now)
            if self.state is CLOSED:
                return
        if self._ack_due and self._delack_at is not None and now >= self._delack_at:
            self._ack_now = True
            self.counters["delayed_acks"] += 1
        ka = self._keepalive_at()
        if ka is not None and now >= ka:
            # RFC 1122 (4.2.3.6): probe an idle connection; give up after keepalive_count.
            if self._ka_probes >= self.cfg.keepalive_count:
                self._die(CloseReason.TIMEOUT)
                return
            self._ka_probes += 1
            self._probe_due = True
            self.counters["keepalive_probes"] += 1

    def _on_rto(self, now: float) -> None:
        """RFC 6298 (5.4)-(5.7): retransmission timer expired."""
        if self.snd_una >= self.snd_max:
            self._rtx_at = None
            return
        st = self.state
        syn_phase = st is SYN_SENT or st is SYN_RECEIVED
        ut = self.cfg.user_timeout
        if self.snd_wnd == 0 and not syn_phase:
            self._rto_zero_window(now, ut)
            return
        self._retries += 1
        limit = self.cfg.syn_retries if syn_phase else self.cfg.max_retries
        if self._retries > limit or (ut is not None and now - self._una_since >= ut):
            self._die(CloseReason.TIMEOUT)
            return
        self.counters["timeouts"] += 1
        if self.ts_ok and not syn_phase:
            # RFC 3522 (2) / RFC 4015 (4) step (0): what undoing a spurious timeout restores.
            self.recovery.save_for_undo(self._ts_val(now), self.cc, self.snd_max - self.snd_una)
        # RFC 6298 (5.5): back off the timer.
        self.rtt.backoff()
        cc = self.cc
        if cc is not None:
            # RFC 5681 (3.1, 4): loss by timeout, cwnd = 1 SMSS.
            cc.on_timeout(self.snd_max - self.snd_una, now)
        self.recovery.on_timeout(self.snd_una, self.snd_max, self._retries)
        # Go-back-N from SND.UNA; Karn: the timed segment is being retransmitted.
        self.snd_nxt = self.snd_una
        self._timed_seq = None
        # RFC 6298 (5.6): restart the timer (output() sends the retransmission).
        self._arm_rtx(now)

    def _settle_timeout(
        self, ack: int, acked: int, ts: tuple[int, int] | None, now: float, retries: int
    ) -> None:
        """The first ACK of new data after ``retries`` timeouts: if its timestamp echo is
        older than the retransmission (RFC 3522), the timeout was spurious: undo it (RFC
        4015)."""
        rec = self.recovery
        tsecr = ts[1] if ts is not None else 0
        undo = rec.spurious_timeout(tsecr)
        if undo is None:
            return
        # RFC 4015 (4): resume with unsent data, no go-back-N over what is in flight.
        if self.snd_nxt < self.snd_max:
            self.snd_nxt = self.snd_max
        rec.undo_timeout(undo, self.cc, ack, self.snd_max, acked, self.snd_mss)
        # The RTO learns the delay that fooled it: the echo times the original (RFC 7323
        # (4.1)), one more sample for RFC 6298 (2.3), as Linux takes it. (RFC 4015 (4)'s
        # SRTT = max(SRTT_prev, sample), RTTVAR = max(RTTVAR_prev, sample/2) left the RTO
        # at three times a single late echo for many round trips: 10 MiB through 20% loss
        # took 33-235 s instead of 14 s.)
        # The echo times the original only when the ACK is back within the backed-off
        # timer of a single timeout. After more timeouts (the original's ACKs were lost,
        # not late), or with an echo older than that (the receiver's TS.Recent held
        # through a hole), its age is our own waiting: as a sample it set SRTT from 0.16 s
        # to 9 s on a sub-millisecond path under 20% loss, the RTO to its 60 s maximum,
        # and every later tail loss cost a minute (simulator seed 2, bulk, loss=0.2).
        rtt = ((self._ts_val(now) - tsecr) & MASK) / 1000.0
        if retries == 1 and rtt <= self.rtt.rto:
            self.rtt.sample(rtt)

    def _rto_zero_window(self, now: float, ut: float | None) -> None:
        """The peer shrank its window to zero with our data in flight.

        RFC 9293 (3.8.6.1) / RFC 1122 (4.2.2.17): keep probing (SEG.SEQ = SND.UNA - 1, as the
        persist timer does) for as long as the probes are answered; only unanswered probes
        (max_retries of them) or, RFC 5482, silence longer than the user timeout, abort.
        """
        self._probes_unanswered += 1
        if self._probes_unanswered > self.cfg.max_retries or (
            ut is not None and now - self._last_rx >= ut
        ):
            self._die(CloseReason.TIMEOUT)
            return
        self._probe_due = True
        self.counters["rto_zero_window_probes"] += 1
        self.counters["zero_window_probes"] += 1
        # What was sent beyond the closed window is resent from SND.UNA when it reopens.
        self.snd_nxt = self.snd_una
        self._timed_seq = None
        self.rtt.backoff()
        t = now + self.rtt.rto
        self._rtx_at = t

    def _arm_rtx(self, now: float) -> None:
        t = now + self.rtt.rto
        ut = self.cfg.user_timeout
        if ut is not None:
            limit = self._una_since + ut
            if limit > now and limit < t:
                t = limit
        self._rtx_at = t

    def _on_persist(self, now: float) -> None:
        """RFC 9293 (3.8.6.1): probe a zero window, backing off exponentially."""
        if self.snd_wnd:
            self._persist_at = None
            return
        self._probes_unanswered += 1
        if self._probes_unanswered > self.cfg.max_retries:
            self._die(CloseReason.TIMEOUT)
            return
        self._probe_due = True
        self.counters["zero_window_probes"] += 1
        self._persist_backoff += 1
        self._persist_at = now + self._persist_interval()

    def _persist_interval(self) -> float:
        base = max(self.rtt.rto, PERSIST_MIN)
        return min(base * (1 << min(self._persist_backoff, 20)), self.cfg.rto_max)

    # ------------------------------------------------------------------ output

    def output(self, now: float) -> list[TcpSegment]:
        """Segments to transmit now (see module docstring)."""
        if self.state is ESTABLISHED:
            if self._nothing_due(now):
                return []  # the common case after a receive batch: the ACK is delayed
            if self.header_prediction:
                seg = self._output_predicted(now)
                if seg is not None:
                    return [seg]  # the common case after a write: one segment, ACK on it
        out: list[TcpSegment] = []
        if self._rst_queue:
            out.extend(self._rst_queue)
            self.counters["rst_sent"] += len(self._rst_queue)
            self._rst_queue.clear()
        st = self.state
        if st is CLOSED or st is LISTEN:
            return out
        if st is SYN_SENT:
            if self.snd_nxt == 0:
                self._emit_syn(now, out, with_ack=False)
            return out
        if st is SYN_RECEIVED:
            if self.snd_nxt == 0 or self._ack_now or self._probe_due:
                self._emit_syn(now, out, with_ack=True)
                self._ack_now = self._ack_due = self._probe_due = False
            return out

        window, right_edge = self._advertise()
        ack_wire = (self.irs + self.rcv_nxt) & MASK
        opts = self._data_options(now)
        n_before = len(out)
        if st.sends:
            self._output_data(now, out, window, ack_wire, opts)
        if self._probe_due:
            self._probe_due = False
            # Zero-window / keep-alive probe: SEG.SEQ = SND.UNA - 1, no text (as Linux does):
            # out of window, so the peer must answer with an ACK carrying its window.
            out.append(self._segment(self.snd_una - 1, ack_wire, ACK, window, b"", opts))
        if len(out) == n_before and (
            self._ack_now
            or (self._ack_due and self._delack_at is not None and now >= self._delack_at)
        ):
            out.append(self._segment(self.snd_max, ack_wire, ACK, window, b"", opts))
            self.counters["pure_acks_sent"] += 1
            # RFC 5681 (4.2): one duplicate ACK per out-of-order segment, even when a batch
            # of them was processed before this output() (the sender counts them).
            extra = self._dupacks_owed - 1
            if extra > 0:
                for _ in range(min(extra, MAX_DUPACK_BURST)):
                    out.append(self._segment(self.snd_max, ack_wire, ACK, window, b"", opts))
                self.counters["pure_acks_sent"] += min(extra, MAX_DUPACK_BURST)
        self._dupacks_owed = 0
        if len(out) > n_before:
            self.rcv_adv = right_edge
            self._ack_now = self._ack_due = False
            self._delack_at = None
            self._rcv_unacked = 0
            self._last_ack_sent = self.rcv_nxt
            self.counters["segments_out"] += len(out) - n_before
        return out

    def _nothing_due(self, now: float) -> bool:
        """True when ``output`` would send nothing and change nothing (ESTABLISHED):
        header prediction's other half (RFC 9293 3.10.7.4 note, Van Jacobson's fast path),
        checked with a few attribute reads before any segment or option is built."""
        if self._ack_now or self._probe_due or self._rst_queue or self._dupacks_owed:
            return False
        if self._ack_due and self._delack_at is not None and now >= self._delack_at:
            return False
        rec = self.recovery
        if rec.sack_rec or rec.rtx_one or (rec.rack is not None and rec.rack.tlp_due):
            return False
        nxt = self.snd_nxt
        if nxt < self._data_end or nxt == self._fin_abs:
            return False  # data (or a FIN) waits: the windows decide in _output_data
        # The persist timer is looked after in _output_data.
        return self.snd_wnd != 0 and self._persist_at is None

    def _output_predicted(self, now: float) -> TcpSegment | None:
        """The sender's half of header prediction: everything queued fits in one segment
        inside both windows, and nothing else is due (no RST, probe, loss recovery, SACK
        or D-SACK block, ECN, FIN, Nagle hold, persist timer, retransmission after a
        timeout). Then it goes out as ``output`` would send it, without the general
        loop; None (nothing changed) otherwise."""
        if self._probe_due or self._rst_queue or self._dupacks_owed or self.ecn_ok:
            return None
        if self._fin_abs is not None or self._persist_at is not None:
            return None
        rec = self.recovery
        if rec.sack_rec or rec.rtx_one or rec.dupacks or (rec.rack is not None and rec.rack.tlp_due):
            return None
        ooo = self._ooo
        if ooo.items or ooo.dsack is not None:
            return None
        nxt = self.snd_nxt
        una = self.snd_una
        n = self._data_end - nxt
        mss = self.snd_mss
        if nxt != self.snd_max or n <= 0 or n > mss:
            return None
        # RFC 5681 (2): within min(cwnd, the peer's window) of SND.UNA (as _send_limit).
        wnd = self.snd_wnd
        cc = self.cc
        cwnd = cc.cwnd if cc is not None else mss
        if nxt + n > una + (wnd if wnd < cwnd else cwnd):
            return None
        if n < mss and not self.cfg.nodelay and self._snd_sml > una:
            return None  # RFC 9293 (3.7.4) Nagle (Minshall's form) holds it: _sendable
        window, right_edge = self._advertise()
        end = nxt + n
        seg = TcpSegment(
            self.local_port, self.remote_port, seq=(self.iss + nxt) & MASK,
            ack=(self.irs + self.rcv_nxt) & MASK, flags=ACK | PSH, window=window,
            payload=self._sbuf.view(nxt - self._sbuf_base, n), options=self._data_options(now),
        )  # fmt: skip
        self._note_sent(nxt, end, n, now)
        if n % mss:
            self._snd_sml = end
        self.snd_nxt = self.snd_max = end
        if self._rtx_at is None:
            # RFC 6298 (5.1): start the timer when data is sent and it is not running.
            if una == nxt:
                self._una_since = now
            self._arm_rtx(now)
        if rec.rack is not None:
            self._rack_arm_pto(now)  # RFC 8985 (7.2): after sending new data
        # The ACK rides on the segment (as output's epilogue).
        self.rcv_adv = right_edge
        self._ack_now = self._ack_due = False
        self._delack_at = None
        self._rcv_unacked = 0
        self._last_ack_sent = self.rcv_nxt
        self.counters["segments_out"] += 1
        return seg

    def _segment(
        self,
        seq: int,
        ack_wire: int,
        flags: int,
        window: int,
        payload: bytes | memoryview,
        opts: TcpOptions | None,
    ) -> TcpSegment:
        """A segment of this connection starting at absolute sequence number ``seq``."""
        if self.ecn_ok:
            return self._ecn_segment(seq, ack_wire, flags, window, payload, opts)
        return TcpSegment(
            self.local_port, self.remote_port, seq=(self.iss + seq) & MASK, ack=ack_wire,
            flags=flags, window=window, payload=payload, options=opts,
        )  # fmt: skip

    # ------------------------------------------------------------------ ECN (RFC 3168)

    def _ecn_segment(
        self,
        seq: int,
        ack_wire: int,
        flags: int,
        window: int,
        payload: bytes | memoryview,
        opts: TcpOptions | None,
    ) -> TcpSegment:
        """A segment of an ECN connection: ECE while echoing a CE (RFC 3168 6.1.3); new
        data is ECT(0) (6.1.2), with CWR on the first after a reduction; retransmissions,
        pure ACKs and probes are not ECT (6.1.5, 6.1.6)."""
        ecn = 0
        if self._ece_pending:
            flags |= ECE
        if payload and seq >= self.snd_max:
            ecn = ECT_0
            if self._cwr_pending:
                self._cwr_pending = False
                flags |= CWR
                self.counters["ecn_cwr_sent"] += 1
        return TcpSegment(
            self.local_port, self.remote_port, seq=(self.iss + seq) & MASK, ack=ack_wire,
            flags=flags, window=window, payload=payload, options=opts, ecn=ecn,
        )  # fmt: skip

    def _ecn_input(self, seg: TcpSegment, now: float) -> None:
        """RFC 3168 (6.1.2, 6.1.3): CE and CWR on data we receive, ECE on ACKs."""
        flags = seg.flags
        if flags & SYN:
            return  # a retransmitted SYN or SYN-ACK repeats the negotiation
        if flags & CWR:
            self._ece_pending = False  # the sender reacted: stop echoing
        if seg.ecn == CE:
            self.counters["ecn_ce_rx"] += 1
            self._ece_pending = True
            self._ack_now = True  # tell the sender at once (Linux's quick ACK on CE)
        if flags & ECE and flags & ACK and self.cc is not None:
            self.counters["ecn_ece_rx"] += 1
            a = _signed(seg.ack - self.iss - self.snd_una)
            ack = self.snd_una + a
            if a < 0 or ack > self.snd_max or ack <= self._ecn_high:
                return  # not an acceptable ACK, or this window was reduced already
            if self.recovery.in_recovery:
                return  # RFC 3168 (6.1.2): a loss recovery reduced this window already
            # RFC 3168 (6.1.2): react as to a loss, once per window, without retransmitting.
            self._ecn_high = self.snd_max
            self.cc.on_loss_fast(self.snd_max - self.snd_una, now)
            self.cc.on_recovery_exit(now)
            self._cwr_pending = True
            self.counters["ecn_reductions"] += 1

    def _note_retransmit(self, n: int, now: float, seq: int) -> None:
        """Bookkeeping of a retransmission of ``n`` bytes at ``seq``: Karn's rule (untime the
        RTT sample), RFC 7323 (4.1) (remember its TSval), RACK's transmit time (RFC 8985
        6.1) and a running timer (RFC 6298 5.1)."""
        rack = self.recovery.rack
        if rack is not None:
            rack.on_sent(seq, seq + n, now, True)
        self.counters["retransmits"] += 1
        self.bytes_retrans += n
        self.bytes_sent += n
        self._timed_seq = None
        self._rtx_tsval = self._ts_val(now)
        if self._rtx_at is None:
            self._arm_rtx(now)

    def _data_options(self, now: float) -> TcpOptions | None:
        sack: tuple[tuple[int, int], ...] = ()
        ooo = self._ooo
        if self.sack_ok and (ooo.items or ooo.dsack is not None):
            # RFC 2018 (3): up to 4 blocks, 3 when timestamps also take option space.
            if ooo.dsack is not None:
                self.counters["dsack_sent"] += 1  # RFC 2883: it goes first, once
            irs = self.irs
            sack = tuple(
                ((irs + a) & MASK, (irs + b) & MASK)
                for a, b in self._ooo.sack_blocks(3 if self.ts_ok else 4)
            )
        if self.ts_ok:
            # RFC 7323 (3.2): TSval from our clock (_ts_val, inlined), TSecr = TS.Recent.
            tsval = (int(now * 1000.0) + self._ts_offset) & MASK
            return TcpOptions(timestamp=(tsval, self.ts_recent), sack_blocks=sack)
        if sack:
            return TcpOptions(sack_blocks=sack)
        return None

    def _emit_syn(self, now: float, out: list[TcpSegment], with_ack: bool) -> None:
        cfg = self.cfg
        opts = TcpOptions(mss=cfg.mss)
        if with_ack:
            # RFC 7323 (1.3) / RFC 2018 (2): answer only options the peer offered.
            opts.wscale = self._rcv_wscale_offer
            opts.sack_permitted = self.sack_ok
            if self.ts_ok:
                opts.timestamp = (self._ts_val(now), self.ts_recent)
            ack = (self.irs + self.rcv_nxt) & MASK
            flags = SYN | ACK | ECE if self.ecn_ok else SYN | ACK  # RFC 3168 (6.1.1)
        else:
            opts.wscale = self._rcv_wscale_offer
            opts.sack_permitted = cfg.sack
            if cfg.timestamps:
                opts.timestamp = (self._ts_val(now), 0)
            ack = 0
            # RFC 3168 (6.1.1): ask for ECN with ECE and CWR; (6.1.1.1) a retransmitted SYN
            # goes without, in case a middlebox drops ECN-setup SYNs (Linux's ecn_fallback).
            flags = SYN | ECE | CWR if cfg.ecn and self.snd_max == 0 else SYN
        retrans = self.snd_max > 0
        out.append(self._segment(0, ack, flags, self._syn_window, b"", opts))
        self.counters["segments_out"] += 1
        if retrans:
            self.counters["retransmits"] += 1
            self._timed_seq = None  # Karn
            self._rtx_tsval = self._ts_val(now)
        elif self._timed_seq is None:
            self._timed_seq = 1
            self._timed_at = now
        self.snd_nxt = 1
        if self.snd_max < 1:
            self.snd_max = 1
        if self._rtx_at is None:
            self._una_since = now
            self._arm_rtx(now)
        if with_ack:
            self._last_ack_sent = self.rcv_nxt

    def _output_data(
        self,
        now: float,
        out: list[TcpSegment],
        window: int,
        ack_wire: int,
        opts: TcpOptions | None,
    ) -> None:
        """Retransmissions loss recovery asks for, then new data (and FIN) as the windows
        allow, then the persist timer."""
        mss = self.snd_mss
        if opts is not None and opts.sack_blocks:
            # Keep the segment within the MTU when SACK blocks take option space.
            mss -= 4 + 8 * len(opts.sack_blocks)
        rec = self.recovery
        if rec.rack is not None and rec.rack.tlp_due:
            self._send_tlp(now, out, window, ack_wire, opts, mss)
        room = 0
        if rec.sack_rec:
            room = self._sack_retransmit(now, out, window, ack_wire, opts, mss)
        elif rec.rtx_one:
            # Fast retransmit / NewReno partial ACK: resend the first unacked segment.
            rec.rtx_one = False
            self._retransmit_first(now, out, window, ack_wire, opts, mss)
        una = self.snd_una
        snd_max = self.snd_max
        nxt = self.snd_nxt
        fin_abs = self._fin_abs
        if nxt < self._data_end or (fin_abs is not None and nxt == fin_abs):
            nxt = self._send_new(now, out, window, ack_wire, opts, mss, self._send_limit(mss, room))
        if nxt != self.snd_nxt:
            self.snd_nxt = nxt
            if nxt > snd_max:
                self.snd_max = nxt
            if self._rtx_at is None:
                # RFC 6298 (5.1): start the timer when data is sent and it is not running.
                if una == snd_max:
                    self._una_since = now
                self._arm_rtx(now)
            if nxt > snd_max and rec.rack is not None:
                self._rack_arm_pto(now)  # RFC 8985 (7.2): after sending new data
        if self.snd_wnd == 0 or self._persist_at is not None:
            self._update_persist(now)

    def _retransmit_first(
        self,
        now: float,
        out: list[TcpSegment],
        window: int,
        ack_wire: int,
        opts: TcpOptions | None,
        mss: int,
    ) -> None:
        """Resend the first unacknowledged segment (RFC 5681 3.2, RFC 6582 3.2)."""
        una = self.snd_una
        snd_max = self.snd_max
        if una >= snd_max:
            return
        base = self._sbuf_base
        data_end = base + len(self._sbuf)
        n = data_end - una if una < data_end else 0
        if n > mss:
            n = mss
        if una + n > snd_max:
            n = snd_max - una
        flags = ACK
        fin_abs = self._fin_abs
        if fin_abs is not None and una + n == fin_abs and snd_max > fin_abs:
            flags |= FIN
        payload = self._sbuf.view(una - base, n) if n else b""
        out.append(self._segment(una, ack_wire, flags, window, payload, opts))
        self._note_retransmit(n, now, una)

    def _send_limit(self, mss: int, sack_room: int) -> int:
        """The sequence number new transmissions must stay below: the smaller of the
        peer's window and cwnd (RFC 5681), or what pipe leaves in a SACK recovery."""
        una = self.snd_una
        nxt = self.snd_nxt
        cc = self.cc
        cwnd = cc.cwnd if cc is not None else mss
        rec = self.recovery
        dupacks = rec.dupacks
        if dupacks and not rec.in_recovery and nxt >= self.snd_max:
            # RFC 3042 / RFC 5681 (3.2): limited transmit, one new segment for each of the
            # first two duplicate ACKs so a small window still gets DupThresh of them.
            cwnd += (dupacks if dupacks < 2 else 2) * mss
        wnd = self.snd_wnd
        if rec.sack_rec:
            # RFC 6675 (5) NextSeg rule (2): new data only while cwnd - pipe >= 1 SMSS.
            limit = nxt + sack_room - sack_room % mss
            return limit if limit < una + wnd else una + wnd
        return una + (wnd if wnd < cwnd else cwnd)

    def _send_new(
        self,
        now: float,
        out: list[TcpSegment],
        window: int,
        ack_wire: int,
        opts: TcpOptions | None,
        mss: int,
        limit: int,
    ) -> int:
        """Send from SND.NXT up to ``limit`` (going back over data in flight after a
        timeout, skipping what the peer SACKed); returns the new SND.NXT."""
        una = self.snd_una
        nxt = self.snd_nxt
        base = self._sbuf_base
        sbuf = self._sbuf
        data_end = self._data_end
        fin_abs = self._fin_abs
        snd_max = self.snd_max
        wnd_edge = una + self.snd_wnd
        # TSO: a segment may carry several MSS of new data; the NIC cuts it at ``mss``.
        tso = self.cfg.tso_max
        seg_max = tso - tso % mss if tso > mss else mss
        sb: SackScoreboard | None = self.recovery.sb
        if not (self.recovery.sb.blocks and nxt < snd_max):
            sb = None
        while True:
            if nxt >= data_end:
                if fin_abs is not None and nxt == fin_abs:
                    # A FIN alone (all data already sent).
                    out.append(self._segment(nxt, ack_wire, FIN | ACK, window, b"", opts))
                    if nxt < snd_max:
                        self.counters["retransmits"] += 1
                        self._rtx_tsval = self._ts_val(now)
                    nxt += 1
                break
            avail = data_end - nxt
            n = avail if avail < seg_max else seg_max
            if sb is not None and nxt < snd_max:
                e = sb.sacked_end(nxt)
                if e is not None:
                    # RFC 6675 (5.1) / RFC 2018: go-back-N after a timeout never resends
                    # SACKed data; those bytes are not in flight, so they use no cwnd.
                    skip = (e if e < snd_max else snd_max) - nxt
                    nxt += skip
                    limit += skip
                    if limit > wnd_edge:
                        limit = wnd_edge
                    continue
                ns = sb.next_sacked_start(nxt)
                if ns is not None and ns < nxt + n:
                    n = ns - nxt
            n = self._sendable(nxt, n, limit - nxt, mss, data_end)
            if n <= 0:
                break
            end = nxt + n
            flags = ACK
            if end == data_end:
                # PSH on the last segment of what the application queued.
                flags = ACK | PSH
                if fin_abs is not None and end == fin_abs:
                    flags = ACK | PSH | FIN
            out.append(self._segment(nxt, ack_wire, flags, window, sbuf.view(nxt - base, n), opts))
            self._note_sent(nxt, end, n, now)
            if n % mss:  # the last (or only) wire segment is a small one
                self._snd_sml = end
            nxt = end + 1 if flags & FIN else end
        return nxt

    def _sendable(self, nxt: int, n: int, room: int, mss: int, data_end: int) -> int:
        """How much of the ``n`` bytes at ``nxt`` may go now (0: none), given ``room``
        left in the windows: sender SWS avoidance and Nagle."""
        if room < n:
            if room <= 0:
                return 0
            if room >= mss:
                return room - room % mss  # TSO: as many full segments as the window takes
            if nxt == self.snd_una or room >= (self.max_snd_wnd >> 1):
                # RFC 9293 (3.8.6.2.1): sender SWS avoidance, a partial segment only if it is
                # at least half the largest window seen, or nothing is in flight.
                return room
            return 0
        fin_abs = self._fin_abs
        if (
            n < mss
            and not self.cfg.nodelay
            and self._snd_sml > self.snd_una
            and nxt >= self.snd_max
            and not (fin_abs is not None and nxt + n == fin_abs)
        ):
            # RFC 9293 (3.7.4) Nagle, in Minshall's form (as Linux): hold a small segment
            # while an earlier small segment is still unacknowledged.
            return 0
        return n

    def _note_sent(self, nxt: int, end: int, n: int, now: float) -> None:
        """Bookkeeping of ``n`` bytes sent from ``nxt``: retransmission (Karn) or the
        segment to time for the RTT (RFC 6298 3)."""
        rack = self.recovery.rack
        if rack is not None:
            rack.on_sent(nxt, end, now, nxt < self.snd_max)  # RFC 8985 (6.1)
        self.bytes_sent += n
        if nxt < self.snd_max:
            self.counters["retransmits"] += 1
            self.bytes_retrans += n
            self._rtx_tsval = self._ts_val(now)
            self._timed_seq = None  # Karn's rule
        elif self._timed_seq is None:
            self._timed_seq = end
            self._timed_at = now

    def _update_persist(self, now: float) -> None:
        """Persist timer: data (or FIN) waits, the peer's window is zero, nothing in flight."""
        una = self.snd_una
        fin_abs = self._fin_abs
        if (
            self.snd_wnd == 0
            and una == self.snd_max
            and (
                self._sbuf_base + len(self._sbuf) > una
                or (fin_abs is not None and self.snd_max <= fin_abs)
            )
        ):
            if self._persist_at is None:
                self._persist_at = now + self._persist_interval()
        elif self._persist_at is not None and self.snd_wnd:
            self._persist_at = None

    def _sack_retransmit(
        self,
        now: float,
        out: list[TcpSegment],
        window: int,
        ack_wire: int,
        opts: TcpOptions | None,
        mss: int,
    ) -> int:
        """RFC 6675 (5): send the retransmissions the recovery picks from the scoreboard;
        returns the cwnd room left for new data."""
        una = self.snd_una
        snd_max = self.snd_max
        cc = self.cc
        cwnd = cc.cwnd if cc is not None else mss
        base = self._sbuf_base
        data_end = base + len(self._sbuf)
        fin_abs = self._fin_abs
        end_new = data_end if fin_abs is None else fin_abs + 1
        can_send_new = snd_max < end_new and snd_max < una + self.snd_wnd
        picks, room = self.recovery.sack_picks(
            una, snd_max, cwnd, mss, data_end, fin_abs, can_send_new
        )
        for s, n, fin in picks:
            payload = self._sbuf.view(s - base, n) if n else b""
            flags = ACK | FIN if fin else ACK
            out.append(self._segment(s, ack_wire, flags, window, payload, opts))
            self.counters["sack_retransmits"] += 1
            self._note_retransmit(n, now, s)
        return room

    # ------------------------------------------------------------------ RACK-TLP hooks

    def _rack_ack(self, ts: tuple[int, int] | None, now: float, advanced: bool) -> None:
        """RFC 8985 (6.2) on an ACK that advanced SND.UNA or SACKed new data: RACK loss
        detection, TLP episode accounting (7.4), and the probe timer (7.2)."""
        rec = self.recovery
        rack = rec.rack
        assert rack is not None
        sb = rec.sb
        dsack = sb.dsack != rack.dsack_seen
        rack.dsack_seen = sb.dsack
        echo_at = None
        if ts is not None and ts[1] and rack.n_rtx:  # (only retransmitted records use it)
            echo_at = now - ((self._ts_val(now) - ts[1]) & MASK) / 1000.0
        una = self.snd_una
        rack.on_ack(una, sb, now, echo_at, dsack, self.snd_nxt, rec.in_recovery, self.rtt.srtt)
        if rack.tlp_end is not None and rack.on_tlp_ack(una, dsack):
            rec.tlp_loss(una, self.snd_max, self.cc, now)
        if rack.lost_bytes:
            rec.rack_loss(una, self.snd_max, self.cc, now)
        if advanced or rec.in_recovery:
            self._rack_arm_pto(now)

    def _rack_arm_pto(self, now: float) -> None:
        """RFC 8985 (7.2): (re)arm the probe timeout while data is in flight, the
        connection is not recovering (fast recovery or RTO) and not probing a zero window."""
        rack = self.recovery.rack
        assert rack is not None
        una = self.snd_una
        snd_max = self.snd_max
        if (
            una >= snd_max
            or self.recovery.in_recovery
            or self._retries
            or self.snd_nxt < snd_max
            or self.snd_wnd == 0
            or not self.state.sends
        ):
            rack.pto_at = None
            return
        rack.schedule_pto(now, self.rtt.srtt, snd_max - una, self.snd_mss, self._rtx_at)

    def _rack_timers(self, now: float) -> None:
        """The RACK reordering timer (RFC 8985 6.2 step 5) and the probe timer (7.3)."""
        rec = self.recovery
        rack = rec.rack
        assert rack is not None
        if rack.reo_at is not None and now >= rack.reo_at:
            rack.reo_at = None
            self.counters["rack_reo_timeouts"] += 1
            rack.detect_loss(now, rec.in_recovery, self.rtt.srtt)
            if rack.lost_bytes:
                rec.rack_loss(self.snd_una, self.snd_max, self.cc, now)
                rack.pto_at = None
        if rack.pto_at is not None and now >= rack.pto_at:
            rack.pto_at = None
            una = self.snd_una
            if una >= self.snd_max or rec.in_recovery or self._retries:
                return
            if rack.tlp_end is not None:
                if una <= rack.tlp_end:
                    # RFC 8985 (7.3): one probe per episode; the RTO stays armed. (7.4.2):
                    # an ACK up to the probe's end proves nothing yet -- its D-SACK may be
                    # on the way behind a queue longer than this PTO.
                    return
                # The ACK passed the last probe with no D-SACK since: it repaired a loss.
                rack.tlp_end = None
                rec.tlp_loss(una, self.snd_max, self.cc, now)
            rack.tlp_due = True
            # RFC 8985 (7.3): the probe replaces this RTO; the timer restarts after it.
            self._arm_rtx(now)

    def _send_tlp(
        self,
        now: float,
        out: list[TcpSegment],
        window: int,
        ack_wire: int,
        opts: TcpOptions | None,
        mss: int,
    ) -> None:
        """RFC 8985 (7.3): the loss probe, one segment regardless of cwnd: new data if the
        peer's window allows, else the last segment sent again."""
        rack = self.recovery.rack
        assert rack is not None
        rack.tlp_due = False
        una = self.snd_una
        nxt = self.snd_nxt
        snd_max = self.snd_max
        if una >= snd_max or nxt < snd_max:
            return
        base = self._sbuf_base
        data_end = base + len(self._sbuf)
        fin_abs = self._fin_abs
        edge = una + self.snd_wnd
        rack.tlp_is_retrans = False
        if (nxt < data_end or (fin_abs is not None and nxt == fin_abs)) and nxt < edge:
            limit = nxt + mss if nxt + mss < edge else edge
            new = self._send_new(now, out, window, ack_wire, opts, mss, limit)
            if new > nxt:
                self.snd_nxt = self.snd_max = new
        if self.snd_max == snd_max:
            fin = fin_abs is not None and snd_max > fin_abs
            top = snd_max - 1 if fin else snd_max
            if top > data_end:
                top = data_end
            # RFC 8985 (7.3): the highest-sequence segment sent (at most one SMSS of it).
            s = top - mss if top - mss > una else una
            recs = rack.segs
            if recs and recs[-1].end == top and recs[-1].start > s:
                s = recs[-1].start
            n = top - s if top > s else 0
            if n == 0 and not fin:
                return
            payload = self._sbuf.view(s - base, n) if n else b""
            flags = ACK | PSH if top == data_end else ACK
            if fin:
                flags |= FIN
            out.append(self._segment(s, ack_wire, flags, window, payload, opts))
            self._note_retransmit(n, now, s)
            rack.tlp_is_retrans = True
        rack.tlp_end = self.snd_max
        self.counters["tlp_probes"] += 1
        self._arm_rtx(now)

    # ------------------------------------------------------------------ path MTU

    def _set_seg_mss(self, seg_mss: int) -> None:
        # RFC 9293 (3.7.1): the effective send MSS; TS option bytes come out of it (RFC
        # 7323, RFC 6691).
        self.seg_mss = seg_mss
        self.snd_mss = max(seg_mss - TS_OPTION_LEN if self.ts_ok else seg_mss, 64)

    def path_mtu_reduced(self, seg_mss: int, now: float) -> bool:
        """RFC 8201 (5.2) / RFC 1191 (6.4): the path to the peer takes segments of at most
        ``seg_mss`` bytes behind a bare TCP header (a Packet Too Big said so; the host
        checked it quotes data in flight). The send MSS comes down to it, and what is in
        flight goes again at once, cut to the new size: the larger segments were dropped
        on the way, which says nothing about congestion, so cwnd stays (Linux's
        tcp_simple_retransmit does the same). False when nothing changes."""
        if not self.state.sends:  # (not while opening: no MSS is agreed yet)
            return False
        seg_mss = max(seg_mss, 64)
        if seg_mss >= self.seg_mss:
            return False
        self._set_seg_mss(seg_mss)
        if self.cc is not None:
            self.cc.mss = self.snd_mss
        self.counters["pmtu_reductions"] += 1
        if self.snd_una < self.snd_max:
            # Every segment in flight may have been too big: go back to SND.UNA as after a
            # timeout, with neither backoff nor a congestion response (SACKed data is
            # skipped; recover = SND.MAX, so duplicate ACKs of the old flight start no
            # fast retransmit).
            self.recovery.on_timeout(self.snd_una, self.snd_max, 1)
            self.snd_nxt = self.snd_una
            self._timed_seq = None
            self._arm_rtx(now)
        return True

    # ------------------------------------------------------------------ introspection

    def unacked_range(self) -> tuple[int, int]:
        """(SND.UNA, SND.NXT) as sequence numbers on the wire."""
        return self._wire_snd(self.snd_una), self._wire_snd(self.snd_nxt)

    def info(self) -> dict[str, object]:
        """A snapshot like ``ss -ti``."""
        cc = self.cc
        return {
            "state": self.state.value,
            "cwnd": cc.cwnd if cc is not None else 0,
            "ssthresh": cc.ssthresh if cc is not None else 0,
            "srtt": self.rtt.srtt,
            "rttvar": self.rtt.rttvar,
            "rto": self.rtt.rto,
            "snd_una": self._wire_snd(self.snd_una),
            "snd_nxt": self._wire_snd(self.snd_nxt),
            "snd_wnd": self.snd_wnd,
            "rcv_nxt": self._wire_rcv(self.rcv_nxt),
            "rcv_wnd": max(0, self.rcv_adv - self.rcv_nxt),
            "rcv_space": self._rcv_space,  # the receive buffer autotuning has reached
            "bytes_sent": self.bytes_sent,
            "bytes_retrans": self.bytes_retrans,
            "bytes_acked": self.bytes_acked,
            "bytes_received": self.bytes_received,
            "retransmits": self.counters["retransmits"],
            "mss": self.snd_mss,
            "rcv_mss": self._rcv_mss,
            "snd_wscale": self.snd_wscale,
            "rcv_wscale": self.rcv_wscale,
            "sack": self.sack_ok,
            "timestamps": self.ts_ok,
            "ecn": self.ecn_ok,
            "rack": self.recovery.rack is not None,
            "in_recovery": self.recovery.in_recovery,
            "sack_recovery": self.recovery.sack_rec,
            "sacked_bytes": self.recovery.sb.sacked,
            "sack_holes": len(self.recovery.sb),
            "congestion": cc.name if cc is not None else self.cfg.congestion,
            "send_queued": len(self._sbuf),
            "recv_queued": len(self._rbuf),
            "ooo_segments": len(self._ooo),
            # For getsockopt(TCP_INFO) (``transport/tcpinfo.py``), as Linux counts them:
            "timeouts_in_a_row": self._retries,  # RTOs without progress (icsk_retransmits)
            "backoff": self.rtt.backoff_count,
            "probes_unanswered": self._probes_unanswered + self._ka_probes,
            "last_rx": self._last_rx,  # when a segment last arrived (the caller's clock)
            "not_sent": max(0, self._data_end - self.snd_nxt),
            "segments_in": self.counters["segments_in"],
            "segments_out": self.counters["segments_out"],
            "ooo_segments_total": self.counters["ooo_segments"],
            "dsack_rx": self.counters["dsack_rx"],
            # The MSS we advertised, less the timestamp option every segment carries.
            "advmss": self.cfg.mss - (12 if self.ts_ok else 0),
            # Sequence space acknowledged, the SYN (and a FIN) counted as one each.
            "seq_acked": self.snd_una,
            "delayed_ack": self.cfg.delayed_ack,
        }

    def __repr__(self) -> str:
        return (
            f"TcpConnection({self.local_port}->{self.remote_port} {self.state.value} "
            f"una={self.snd_una} nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt})"
        )
