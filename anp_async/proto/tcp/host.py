"""TCP rules that belong to the host rather than to one connection (sans-I/O).

:class:`TcpHost` owns the connection table and the listeners of one address and decides
what happens to a segment before (or instead of) a connection's state machine sees it:

- demultiplexing by 4-tuple, and reopening a TIME_WAIT 4-tuple with a new SYN
  (RFC 9293 3.10.7.4, RFC 6191);
- LISTEN input (RFC 9293 3.10.7.2): RST dropped, ACK answered with RST, SYN opening a
  connection, bounded by the listen backlog and a host-wide limit;
- SYN cookies once a listener's backlog is full (RFC 4987 3.6), and the ACK that
  returns one;
- the RST for a segment to a closed port (RFC 9293 3.10.7.1, :func:`rst_reply`);
- the sequence check of ICMP errors (RFC 5927 4.1) and RFC 1122's hard errors;
- ephemeral port choice.

Input is a parsed segment and the time; output is the entry whose connection took the
segment (its output is due), segments the host answers itself (:attr:`TcpHost.outbox`)
and entries it retired. The table holds *entries*: whatever the I/O layer keeps per
connection (the asyncio transport keeps a ``TcpEndpoint``), as long as it has ``key``
and ``conn``; the host makes them with the ``new_entry`` factory it is given.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from ...counters import Counters
from ..ports import FamilyPorts
from .config import ChallengeAckLimiter, TcpConfig
from .connection import TcpConnection, TcpState, rcv_wscale_for
from .isn import IsnGenerator
from .segment import ACK, FIN, RST, SYN, TcpOptions, TcpSegment
from .syncookies import MAX_AGE_SLOTS, SLOT, SynCookies, decode_ts_options, encode_ts_options

MASK = 0xFFFFFFFF

#: Linux's default ip_local_port_range.
EPHEMERAL_PORTS = range(32768, 61000)

#: (remote ip, remote port, local port)
Key = tuple[bytes, int, int]

# ICMP destination unreachable and its hard-error codes (RFC 1122 4.2.3.9).
_DEST_UNREACH = 3
_HARD_ERRORS = (2, 3)  # protocol unreachable, port unreachable


# os.strerror's words for the two errors the host raises (proto/ does not import os).
_STRERROR = {
    errno.EADDRINUSE: "Address already in use",
    errno.EADDRNOTAVAIL: "Cannot assign requested address",
}


def _oserror(code: int) -> OSError:
    return OSError(code, _STRERROR[code])


class Entry(Protocol):
    """What the host needs of a table entry: its 4-tuple and its connection."""

    @property
    def key(self) -> Key: ...

    @property
    def conn(self) -> TcpConnection: ...


E = TypeVar("E", bound=Entry)


@dataclass(eq=False, slots=True)
class Listener:
    """A listening port: bounded half-open (SYN_RECEIVED) count, backlog + 1 as in Linux.

    ``accept`` is the I/O layer's callback for a connection that completed its
    handshake; the host only stores it.
    """

    port: int
    backlog: int
    accept: Callable[[Any], None]
    half_open: int = 0
    closed: bool = False
    #: When this listener last answered a SYN with a cookie (None: never).
    cookie_sent_at: float | None = None
    #: The families it takes (an AF_INET socket hears IPv4 only, an IPV6_V6ONLY one IPv6
    #: only); a SYN of the other family reaches the other family's listener on the port,
    #: if there is one, or finds the port closed and is answered with RST.
    v4: bool = True
    v6: bool = True

    def __post_init__(self) -> None:
        self.backlog = max(1, self.backlog)


def rst_reply(seg: TcpSegment) -> TcpSegment | None:
    """RFC 9293 3.10.7.1: the RST answering ``seg`` where no connection exists (None for a
    RST, which is never answered)."""
    flags = seg.flags
    if flags & RST:
        return None
    if flags & ACK:
        return TcpSegment(seg.dst_port, seg.src_port, seq=seg.ack, ack=0, flags=RST, window=0)
    seg_len = len(seg.payload) + (1 if flags & SYN else 0) + (flags & FIN)
    return TcpSegment(
        seg.dst_port, seg.src_port, seq=0, ack=(seg.seq + seg_len) & MASK, flags=RST | ACK,
        window=0,
    )  # fmt: skip


class TcpHost(Generic[E]):
    """The connection table and listeners of one local address, and the host's rules.

    ``new_entry(key, conn, listener)`` makes the table entry for a connection the host
    opens for a listener. ``secret`` (at least 48 bytes) keys the ISNs and the SYN
    cookies; ``rng`` picks ephemeral ports (None: the ``random`` module's).
    """

    def __init__(
        self,
        local_ip: bytes,
        config: TcpConfig,
        mtu: int,
        new_entry: Callable[[Key, TcpConnection, Listener], E],
        *,
        secret: bytes,
        rng: random.Random | None = None,
    ) -> None:
        if len(secret) < 48:
            raise ValueError("TcpHost needs a secret of at least 48 bytes")
        self.local_ip = local_ip
        #: Our IPv6 address, if any: connections with 16-byte peers use it.
        self.local_ip6: bytes | None = None
        self.config = config
        self.mtu = mtu
        self._new_entry = new_entry
        self.conns: dict[Key, E] = {}
        # Listeners by port and family: an AF_INET and an IPV6_V6ONLY listener may share
        # a port, as on Linux (a dual-stack server's two sockets).
        self._listening: FamilyPorts[Listener] = FamilyPorts()
        self.counters = Counters()
        self.max_connections = 65536
        #: Which (local port, remote port) pairs :meth:`pick_port` may take; None: any.
        #: A worker of a multi-queue host takes only those its NIC queue receives.
        self.port_ok: Callable[[int, int], bool] | None = None
        self.isn = IsnGenerator(secret[:16])
        # RFC 4987 (3.6): stateless SYN-ACKs once a SYN queue is full.
        self.cookies = SynCookies(secret[16:48])
        # RFC 5961 (7): one challenge-ACK budget for all connections of this host.
        self.challenge_limiter = ChallengeAckLimiter(config.challenge_ack_global_limit)
        self._choice: Callable[[range], int] = rng.choice if rng is not None else random.choice
        #: Segments the host answers itself: (destination address, segment).
        self.outbox: list[tuple[bytes, TcpSegment]] = []
        #: Entries taken out of the table by the host (a TIME_WAIT reopened by a SYN).
        self.retired: list[E] = []

    # ------------------------------------------------------------------ input

    def input(self, src: bytes, dst: bytes, seg: TcpSegment, now: float) -> E | None:
        """One segment from ``src`` to ``dst``; returns the entry whose connection took it."""
        self.counters["rx_segments"] += 1
        entry = self.conns.get((src, seg.src_port, seg.dst_port))
        if entry is not None and entry.conn.state is TcpState.CLOSED:
            # RFC 9293 3.10.7.1: a connection that has closed (its entry leaves the table
            # when the receive batch is flushed) is no TCB: answer as a closed port would,
            # or a peer still ESTABLISHED never learns (anp sim --seed 233).
            self.counters["to_closed_tcb"] += 1
            entry = None
        if entry is not None:
            if not self._reopens_time_wait(entry.conn, seg):
                entry.conn.on_segment(seg, now)
                return entry
            # RFC 9293 3.10.7.4 / RFC 6191: a new SYN may reopen a 4-tuple in TIME_WAIT.
            self.counters["time_wait_reopened"] += 1
            self.remove(entry)
            self.retired.append(entry)
        if dst != self._local(src):
            self.counters["to_broadcast_dropped"] += 1
            return None
        listener = self.listener_for(seg.dst_port, src, seg.src_port)
        if listener is not None and not listener.closed:
            return self._listen_input(listener, src, seg, now)
        if self.listening(seg.dst_port):
            # RFC 9293 3.10.7.1: no listener of this family -- a closed port, as Linux
            # answers a SYN from IPv6 to a port only an AF_INET socket listens on.
            self.counters["listen_other_family"] += 1
        self.counters["to_closed_port"] += 1
        self._reset(src, seg)
        return None

    def _reopens_time_wait(self, conn: TcpConnection, seg: TcpSegment) -> bool:
        return (
            seg.flags & (SYN | ACK | RST) == SYN
            and conn.state is TcpState.TIME_WAIT
            and self.listening(seg.dst_port)
            and conn.accepts_new_syn(seg)
        )

    def _listen_input(
        self, listener: Listener, src: bytes, seg: TcpSegment, now: float
    ) -> E | None:
        flags = seg.flags
        # RFC 9293 3.10.7.2 (LISTEN): drop RST; answer ACK with RST; take SYN.
        if flags & RST:
            self.counters["listen_rst_dropped"] += 1
            return None
        if flags & ACK:
            if not flags & SYN:
                took, opened = self._cookie_ack(listener, src, seg, now)
                if took:
                    return opened
            self.counters["listen_ack_reset"] += 1
            self._reset(src, seg)
            return None
        if not flags & SYN:
            self.counters["listen_no_syn_dropped"] += 1
            return None
        if len(self.conns) >= self.max_connections:
            self.counters["listen_overflow"] += 1
            return None
        if listener.half_open > listener.backlog:
            # Linux sizes the SYN queue by the listen backlog: full when it holds more than
            # the backlog (inet_csk_reqsk_queue_is_full, qlen > backlog since Linux 6.14):
            # backlog + 1 half-open connections, then cookies (tests/conformance/
            # test_listen_queue.py shows both stacks doing so).
            if self.config.syncookies:
                self._send_cookie(listener, src, seg, now)
            else:
                # Like Linux without syncookies: a full SYN queue drops the SYN; the peer
                # retries.
                self.counters["listen_overflow"] += 1
            return None
        lip = self._local(src)
        sent = listener.cookie_sent_at
        if self.config.syncookies and sent is not None and now - sent <= SLOT * MAX_AGE_SLOTS:
            # While this listener answers SYNs with cookies, a half-open connection takes
            # the cookie as its ISS: a retransmitted SYN that finds room in the queue must
            # not get another ISS than the cookie SYN-ACK the client may have acknowledged
            # already (that ACK would be a bad one in SYN-RECEIVED: RST, as in Linux).
            o = seg.options
            iss, _ = self.cookies.make(
                src, seg.src_port, lip, seg.dst_port, seg.seq,
                o.mss if o is not None and o.mss else 536, now,
            )  # fmt: skip
            self.counters["syn_iss_from_cookie"] += 1
        else:
            iss = self.isn.isn(lip, seg.dst_port, src, seg.src_port, now)
        conn = TcpConnection.accept_syn(
            self.conn_config(remote=src), lip, seg.dst_port, src, seg.src_port, seg, iss, now
        )
        self.counters["passive_opens"] += 1
        return self._open_for(listener, (src, seg.src_port, seg.dst_port), conn)

    def _open_for(self, listener: Listener, key: Key, conn: TcpConnection) -> E:
        entry = self._new_entry(key, conn, listener)
        listener.half_open += 1
        self.conns[key] = entry
        return entry

    # ------------------------------------------------------------ SYN cookies

    def _send_cookie(self, listener: Listener, src: bytes, seg: TcpSegment, now: float) -> None:
        """RFC 4987 (3.6): a SYN-ACK whose ISN is a cookie; nothing is remembered."""
        cfg = self.config
        o = seg.options
        peer_mss = o.mss if o is not None and o.mss else 536
        cookie, _ = self.cookies.make(
            src, seg.src_port, self._local(src), seg.dst_port, seg.seq, peer_mss, now
        )
        opts = TcpOptions(mss=self._mss(src))
        ts = o.timestamp if o is not None else None
        if o is not None and ts is not None and cfg.timestamps:
            # Window scale and SACK-permitted travel in the low bits of our TSval (as
            # Linux); without timestamps the connection is rebuilt without them.
            wscale = o.wscale if cfg.window_scale else None
            sack = bool(o.sack_permitted and cfg.sack)
            tsval = (int(now * 1000.0) + TcpConnection.ts_offset_for(cookie)) & MASK
            opts.timestamp = (encode_ts_options(tsval, wscale, sack), ts[0])
            if wscale is not None:
                opts.wscale = rcv_wscale_for(cfg)
            opts.sack_permitted = sack
        syn_ack = TcpSegment(
            seg.dst_port, seg.src_port, seq=cookie, ack=(seg.seq + 1) & MASK, flags=SYN | ACK,
            window=min(cfg.recv_buffer, 0xFFFF), options=opts,
        )  # fmt: skip
        listener.cookie_sent_at = now
        self.counters["syncookies_sent"] += 1
        self.outbox.append((src, syn_ack))

    def _cookie_ack(
        self, listener: Listener, src: bytes, seg: TcpSegment, now: float
    ) -> tuple[bool, E | None]:
        """An ACK to a listener: if it returns a valid cookie, open the connection.

        Returns (True, the new entry), (True, None) when the cookie was good but the table
        is full, and (False, None) when it was no cookie of ours (the ACK then gets a RST).
        """
        sent = listener.cookie_sent_at
        # Like Linux: cookies are checked only while this listener recently sent some, so
        # stray ACKs cannot open connections the rest of the time.
        if not self.config.syncookies or sent is None or now - sent > SLOT * MAX_AGE_SLOTS:
            return False, None
        lip = self._local(src)
        iss = (seg.ack - 1) & MASK
        mss = self.cookies.check(
            src, seg.src_port, lip, seg.dst_port, (seg.seq - 1) & MASK, iss, now
        )
        if mss is None:
            self.counters["syncookies_failed"] += 1
            return False, None
        if len(self.conns) >= self.max_connections:
            self.counters["listen_overflow"] += 1
            return True, None
        wscale: int | None = None
        sack = False
        o = seg.options
        if o is not None and o.timestamp is not None and self.config.timestamps:
            wscale, sack = decode_ts_options(o.timestamp[1])
            if not self.config.window_scale:
                wscale = None
            sack = sack and self.config.sack
        conn = TcpConnection.from_cookie(
            self.conn_config(remote=src), lip, seg.dst_port, src, seg.src_port, seg, iss, mss, now,
            wscale, sack,
        )  # fmt: skip
        self.counters["syncookies_ok"] += 1
        self.counters["passive_opens"] += 1
        return True, self._open_for(listener, (src, seg.src_port, seg.dst_port), conn)

    def _reset(self, dst: bytes, seg: TcpSegment) -> None:
        rst = rst_reply(seg)
        if rst is not None:
            self.counters["rst_sent"] += 1
            self.outbox.append((dst, rst))

    def take_outbox(self) -> list[tuple[bytes, TcpSegment]]:
        """The segments the host answered with since the last call."""
        out, self.outbox = self.outbox, []
        return out

    def take_retired(self) -> list[E]:
        """The entries the host took out of the table since the last call."""
        out, self.retired = self.retired, []
        return out

    # ------------------------------------------------------------ ICMP errors

    def icmp_error(self, type_: int, code: int, dst: bytes, first8: bytes | memoryview) -> E | None:
        """An ICMP error quoting a segment we sent to ``dst`` (``first8``: the quoted TCP
        header's first 8 bytes). Returns the entry to fail as refused (a hard error while
        opening), else None: soft errors are only counted."""
        entry = self._quoted_entry(dst, first8)
        if entry is None:
            return None
        self.counters["icmp_errors"] += 1
        # RFC 1122 4.2.3.9: hard errors (port/protocol unreachable) abort a connection
        # being opened; soft errors are only remembered.
        if (
            entry.conn.state is TcpState.SYN_SENT
            and type_ == _DEST_UNREACH
            and code in _HARD_ERRORS
        ):
            return entry
        return None

    def path_mtu_reduced(
        self, dst: bytes, first8: bytes | memoryview, mtu: int, now: float
    ) -> E | None:
        """A Packet Too Big quoting a segment we sent to ``dst`` says the path MTU is
        ``mtu`` (RFC 8201 (5.2)): the connection lowers its MSS to fit (the MTU less the
        IP and TCP headers) and resends what is in flight. Returns the entry to flush when
        its MSS came down, else None."""
        entry = self._quoted_entry(dst, first8)
        if entry is None:
            return None
        self.counters["icmp_packet_too_big"] += 1
        ip_len = 40 if len(dst) == 16 else 20
        return entry if entry.conn.path_mtu_reduced(mtu - ip_len - 20, now) else None

    def _quoted_entry(self, dst: bytes, first8: bytes | memoryview) -> E | None:
        """The connection an ICMP error's quoted segment (to ``dst``; ``first8``: its TCP
        header's first 8 bytes) belongs to, if that segment's sequence number is in flight
        (RFC 5927 (4.1): others are forged or stale); None otherwise, counted."""
        if len(first8) < 8:
            return None
        sport = int.from_bytes(first8[0:2], "big")
        dport = int.from_bytes(first8[2:4], "big")
        seq = int.from_bytes(first8[4:8], "big")
        entry = self.conns.get((dst, dport, sport))
        if entry is None:
            self.counters["icmp_unmatched"] += 1
            return None
        una, nxt = entry.conn.unacked_range()
        if (seq - una) & MASK > (nxt - una) & MASK:
            self.counters["icmp_out_of_window"] += 1
            return None
        return entry

    def opening_via(self, next_hop: bytes, next_hop_of: Callable[[bytes], bytes | None]) -> list[E]:
        """Connections still opening (SYN_SENT) whose route leads through ``next_hop``."""
        return [
            e
            for e in self.conns.values()
            if e.conn.state is TcpState.SYN_SENT and next_hop_of(e.key[0]) == next_hop
        ]

    # ---------------------------------------------------------------- opening

    def _local(self, remote: bytes) -> bytes:
        """Our address in the family of ``remote``."""
        if len(remote) == 16 and self.local_ip6 is not None:
            return self.local_ip6
        return self.local_ip

    def _mss(self, remote: bytes = b"") -> int:
        # RFC 9293 (3.7.1) / RFC 8200 (8.3): MTU less the IP header (20 or 40) and TCP's 20
        ip_len = 40 if len(remote) == 16 else 20
        return max(88, min(self.config.mss, self.mtu - ip_len - 20))

    def conn_config(self, *, remote: bytes = b"", **overrides: Any) -> TcpConfig:
        """The configuration of a new connection: the host's, with the MSS the MTU allows
        (over IPv6 when ``remote`` is 16 bytes) and the shared challenge-ACK budget."""
        cfg = self.config
        fields = {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}
        fields.update(mss=self._mss(remote), challenge_limiter=self.challenge_limiter, **overrides)
        return TcpConfig(**fields)

    def port_free(self, remote: bytes, rport: int, lport: int) -> bool:
        """No connection (TIME_WAIT included) uses this 4-tuple and no listener the port."""
        return (remote, rport, lport) not in self.conns and not self.listening(lport)

    def pick_port(self, remote: bytes, rport: int) -> int:
        """A random ephemeral port whose 4-tuple is free; OSError(EADDRNOTAVAIL) if none."""
        ok = self.port_ok
        for _ in range(128):
            port = self._choice(EPHEMERAL_PORTS)
            if self.port_free(remote, rport, port) and (ok is None or ok(port, rport)):
                return port
        for port in EPHEMERAL_PORTS:
            if self.port_free(remote, rport, port) and (ok is None or ok(port, rport)):
                return port
        raise _oserror(errno.EADDRNOTAVAIL)

    def connect(
        self, remote: bytes, rport: int, lport: int, now: float, cfg: TcpConfig | None = None
    ) -> TcpConnection:
        """A connection actively opened to ``remote:rport`` from ``lport`` (not yet in the
        table: :meth:`add` its entry)."""
        lip = self._local(remote)
        iss = self.isn.isn(lip, lport, remote, rport, now)
        conn = TcpConnection.connect(
            cfg or self.conn_config(remote=remote), lip, lport, remote, rport, iss, now
        )
        self.counters["active_opens"] += 1
        return conn

    def add(self, entry: E) -> None:
        """Put an entry into the table."""
        self.conns[entry.key] = entry

    def remove(self, entry: E) -> bool:
        """Take ``entry`` out of the table; False if it was not (or no longer) there."""
        if self.conns.get(entry.key) is entry:
            del self.conns[entry.key]
            return True
        return False

    # -------------------------------------------------------------- listeners

    def listen(
        self, port: int, backlog: int, accept: Callable[[Any], None], *,
        v4: bool = True, v6: bool = True, reuseport: bool = False,
    ) -> Listener:  # fmt: skip
        """Start listening on ``port`` for the families ``v4``/``v6``; OSError(EADDRINUSE)
        if something listens there for one of them -- unless it and this one both set
        ``reuseport`` (SO_REUSEPORT): then they share the port, each SYN going to the
        one its flow's hash picks (:meth:`listener_for`)."""
        if self.listen_conflict(port, v4=v4, v6=v6, reuseport=reuseport):
            raise _oserror(errno.EADDRINUSE)
        listener = Listener(port, backlog, accept, v4=v4, v6=v6)
        self._listening.add(port, listener, v4=v4, v6=v6, share=reuseport)
        return listener

    def unlisten(self, listener: Listener) -> None:
        """Stop listening; connections it opened stay."""
        listener.closed = True
        self._listening.remove(listener.port, listener)

    def listener_for(self, port: int, src: bytes, sport: int = 0) -> Listener | None:
        """The listener a segment from ``src`` (4 or 16 bytes) port ``sport`` to ``port``
        reaches, if any; among listeners sharing the port (SO_REUSEPORT), the one the
        source's hash picks (a flow's SYN, its retransmissions and its cookie ACK reach
        the same one)."""
        return self._listening.pick(port, len(src) == 16, src=(src, sport))

    def listening(self, port: int) -> bool:
        """Does a listener of either family hold ``port``?"""
        return self._listening.held(port)

    def listen_conflict(
        self, port: int, *, v4: bool = True, v6: bool = True, reuseport: bool = False
    ) -> bool:
        """Would a listener for these families clash with one on ``port`` (EADDRINUSE)?
        With ``reuseport`` it joins listeners that all set it."""
        return self._listening.conflict(port, v4=v4, v6=v6, share=reuseport)

    @property
    def listeners(self) -> dict[int, list[Listener]]:
        """Every listener by port (two where an IPv4-only and an IPv6-only one share it)."""
        out: dict[int, list[Listener]] = {}
        for port, listener in self._listening.items():
            out.setdefault(port, []).append(listener)
        return out

    # ------------------------------------------------------------------ state

    def busy(self) -> bool:
        """True while a connection still has data or a FIN to deliver to its peer."""
        for entry in self.conns.values():
            if entry.conn.state in (TcpState.FIN_WAIT_1, TcpState.CLOSING, TcpState.LAST_ACK):
                return True
        return False

    def __iter__(self) -> Iterator[E]:
        return iter(list(self.conns.values()))
