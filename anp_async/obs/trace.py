"""``anp trace``: one line per decision on a frame's way through the stack, like
``tcpdump -n`` for the inside of a stack.

For each receive batch: the wake-up that read it (mode, frames in the batch); for each
frame: Ethernet, ARP, IPv4 (fragments and reassembly), ICMP, UDP or TCP -- with the
connection's state before and after, the counters the layer moved and the RFC rule behind a
drop --, the transport call it caused (``data_received``, ``connection_made``,
``connection_lost`` ...), every frame sent in answer, and the time spent in each layer
(exclusive of the layers below it). Frames the stack sends on its own (timers, the
application) are traced too.

How it attaches, and why tracing off costs nothing: :meth:`Tracer.attach` puts traced
versions of the stack's per-layer methods on the stack *instance* (``stack._rx_frame``,
``stack._rx_ipv4``, ``stack.tcp.input`` ...), which shadow the class's methods; the stack
already calls them through ``self.``. :meth:`Tracer.detach` deletes them and the class
methods run again -- the exact code that runs when no tracer was ever attached. Nothing
in ``proto/`` knows about tracing: the tracer reads headers with the same pure parsers
and learns each layer's decision from the counters it moved (``COUNTER_RULES`` names
the RFC rule behind each).
"""

from __future__ import annotations

import ipaddress
import json
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..proto.arp import parse_arp
from ..proto.errors import ParseError
from ..proto.ethernet import mac_to_str, parse_ethernet
from ..proto.icmp import parse_icmp
from ..proto.ipv4 import ip_to_str, parse_ipv4
from ..proto.tcp.segment import flags_str, parse_tcp

ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}
ICMP_TYPES = {0: "echo-reply", 3: "dest-unreach", 8: "echo-request", 11: "time-exceeded"}

#: Counter -> the rule behind the decision it counts (shown where a frame is dropped,
#: answered or changes state). Counters not listed are shown by name only.
COUNTER_RULES: dict[str, str] = {
    "eth.not_for_us": "IEEE 802.3: destination MAC is neither ours nor broadcast",
    "eth.eth_truncated": "IEEE 802.3: frame shorter than its header",
    "eth.unknown_ethertype": "EtherType not spoken here (IPv4 and ARP only)",
    "eth.ipv6_ignored": "IPv6 not implemented: dropped",
    "arp.own_ignored": "RFC 826: a packet from our own address is ignored",
    "arp.replies_sent": "RFC 826: a request for our address is answered",
    "arp.entries_added": "RFC 826: merge/learn the sender's mapping",
    "arp.entries_updated": "RFC 826 merge flag: refresh the sender's mapping",
    "arp.conflicts": "RFC 5227: someone else claims our address",
    "ip.ip_bad_checksum": "RFC 791 3.1 / RFC 1122 3.2.1.2: header checksum must verify",
    "ip.ip_bad_version": "RFC 791 3.1: version must be 4",
    "ip.ip_bad_ihl": "RFC 791 3.1: IHL below 5 words",
    "ip.ip_bad_length": "RFC 791 3.1: total length beyond the frame or below the header",
    "ip.ip_truncated": "RFC 791 3.1: shorter than an IPv4 header",
    "ip.not_for_us": "RFC 1122 3.3.4.2: not addressed to this host (no forwarding)",
    "ip.reassembled": "RFC 791 3.2 / RFC 815: all fragments here: datagram complete",
    "ip.reassembly_fragments": "RFC 791 3.2: fragment held for reassembly",
    "ip.reassembly_bad_fragment": "RFC 791 3.2 / RFC 5722: inconsistent fragment dropped",
    "ip.reassembly_duplicates": "RFC 791 3.2: duplicate fragment ignored",
    "ip.reassembly_too_big": "RFC 791 3.1: reassembled datagram beyond 65535 bytes",
    "ip.reassembly_no_memory": "reassembly buffer full: fragment dropped (bounded)",
    "ip.unknown_protocol": "RFC 1122 3.2.2.1: protocol not spoken (no ICMP sent)",
    "icmp.echo_replies_sent": "RFC 792 / RFC 1122 3.2.2.6: echo request answered",
    "icmp.echo_to_broadcast_ignored": "RFC 1122 3.2.2.6: echo to broadcast may be ignored",
    "icmp.icmp_bad_checksum": "RFC 792: checksum must verify",
    "icmp.echo_reply_unmatched": "no ping waiting for this identifier/sequence",
    "icmp.error_not_ours": "RFC 5927: quoted packet was not sent by us",
    "udp.udp_bad_checksum": "RFC 768 / RFC 1122 4.1.3.4: checksum must verify",
    "udp.udp_bad_length": "RFC 768: length field beyond the datagram",
    "udp.no_port": "RFC 1122 4.1.3.1: no socket on this port",
    "udp.port_unreachable_sent": "RFC 1122 3.2.2.1 / 4.1.3.1: ICMP port unreachable sent",
    "udp.port_unreachable_suppressed": "RFC 1122 3.2.2: no ICMP error about this datagram",
    "udp.not_from_connected_peer": "connected socket: datagram from another peer dropped",
    "tcp.tcp_bad_checksum": "RFC 9293 3.1: checksum must verify",
    "tcp.tcp_bad_offset": "RFC 9293 3.1: data offset outside the segment",
    "tcp.tcp_bad_option": "RFC 9293 3.1: malformed option: segment dropped",
    "tcp.to_closed_port": "RFC 9293 3.10.7.1: CLOSED port: answer RST",
    "tcp.rst_sent": "RFC 9293 3.10.7.1: RST sent",
    "tcp.passive_opens": "RFC 9293 3.10.7.2: SYN on LISTEN: SYN-ACK sent",
    "tcp.listen_overflow": "listen backlog full: SYN dropped (like Linux without cookies)",
    "tcp.syncookies_sent": "RFC 4987 3.6: backlog full: answered with a SYN cookie",
    "tcp.syncookies_ok": "RFC 4987 3.6: ACK carries a valid cookie: connection made",
    "tcp.syncookies_failed": "RFC 4987 3.6: ACK with a bad cookie",
    "tcp.listen_ack_reset": "RFC 9293 3.10.7.2: ACK on LISTEN: RST",
    "tcp.listen_rst_dropped": "RFC 9293 3.10.7.2: RST on LISTEN ignored",
    "tcp.listen_no_syn_dropped": "RFC 9293 3.10.7.2: no SYN on LISTEN: dropped",
    "tcp.time_wait_reopened": "RFC 6191 / RFC 9293 3.6.1: new SYN reopens TIME-WAIT",
    "conn.dropped_unacceptable": "RFC 9293 3.10.7.4 (1): not acceptable: ACK and drop",
    "conn.dropped_paws": "RFC 7323 5.3: PAWS: old timestamp, ACK and drop",
    "conn.dropped_bad_ack": "RFC 9293 3.10.7.4 (5): ACK of unsent data: ACK and drop",
    "conn.dropped_no_ack": "RFC 9293 3.10.7.4 (5): no ACK bit: dropped",
    "conn.dropped_syn_sent": "RFC 9293 3.10.7.3: unacceptable in SYN-SENT",
    "conn.dropped_closed": "RFC 9293 3.10.7.1: connection closed",
    "conn.dropped_ooo_full": "out-of-order queue full: segment dropped",
    "conn.challenge_acks": "RFC 5961 3.2/4.2: RST/SYN in window: challenge ACK",
    "conn.challenge_acks_suppressed": "RFC 5961 7: challenge ACK rate limit",
    "conn.rst_received": "RFC 9293 3.10.7.4 (2): acceptable RST: connection reset",
    "conn.dup_acks": "RFC 5681 2: duplicate ACK",
    "conn.fast_retransmits": "RFC 5681 3.2: third duplicate ACK: fast retransmit",
    "conn.ooo_segments": "RFC 9293 3.10.7.4: out of order: queued, duplicate ACK",
    "conn.dup_segments": "RFC 9293 3.10.7.4: old duplicate: ACK",
    "conn.trimmed_beyond_window": "RFC 9293 3.10.7.4: data beyond the window trimmed",
    "conn.sack_blocks_invalid": "RFC 2018 / RFC 6675: SACK block outside the window",
    "conn.delayed_acks": "RFC 1122 4.2.3.2: ACK delayed",
    "conn.window_updates": "RFC 9293 3.8.6.2.2: window update",
}
#: Counters that count normal traffic, not decisions (left out of the lines).
QUIET = frozenset(
    {"eth.rx_frames", "ip.rx_packets", "icmp.rx_messages", "tcp.rx_segments", "conn.segments_in",
     "udp.rx_datagrams", "ip.tx_packets", "tcp.tx_segments", "conn.segments_out",
     "icmp.echo_requests", "arp.requests_received", "tcp.tso_segments_sent",
     "conn.pure_acks_sent", "conn.sack_blocks_rx"}
)  # fmt: skip


def _moved(prefix: str, before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    out = {}
    for k, v in after.items():
        d = v - before.get(k, 0)
        if d and f"{prefix}.{k}" not in QUIET:
            out[f"{prefix}.{k}"] = d
    return out


def rules_for(moved: dict[str, int]) -> list[str]:
    """The rules behind the counters that moved (in the table's order)."""
    return [COUNTER_RULES[k] for k in moved if k in COUNTER_RULES]


def _addr(b: Any) -> str:
    """An IPv4 or IPv6 address from its 4 or 16 bytes."""
    return str(ipaddress.ip_address(bytes(b)))


def _hp(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------- filter


@dataclass
class FrameInfo:
    """What a filter can test about one frame and everything it caused."""

    protos: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    drop: bool = False
    direction: str = "rx"


class TraceFilterError(ValueError):
    """A trace filter that cannot be read."""


Pred = Callable[[FrameInfo], bool]


def parse_filter(expr: str | None) -> Pred:
    """A tcpdump-like filter: terms ``arp ip icmp udp tcp``, ``host A``, ``port N``, ``drop``,
    ``rx``, ``tx``, each optionally preceded by ``not``, joined by ``and`` (or juxtaposition)
    and ``or`` (``and`` binds tighter). Empty: every frame."""
    toks = (expr or "").split()
    if not toks:
        return lambda f: True
    alts: list[list[Pred]] = [[]]
    i = 0
    while i < len(toks):
        t = toks[i].lower()
        i += 1
        if t == "or":
            alts.append([])
            continue
        if t in ("and", "&&"):
            continue
        neg = False
        p: Pred
        if t in ("not", "!"):
            if i >= len(toks):
                raise TraceFilterError("'not' needs a term")
            neg, t = True, toks[i].lower()
            i += 1
        if t in ("arp", "ip", "icmp", "udp", "tcp", "eth"):
            p = _has_proto(t)
        elif t == "drop":
            p = _is_drop
        elif t in ("rx", "tx"):
            p = _direction(t)
        elif t in ("host", "port"):
            if i >= len(toks):
                raise TraceFilterError(f"'{t}' needs a value")
            v = toks[i]
            i += 1
            if t == "host":
                p = _has_host(v)
            else:
                if not v.isdigit():
                    raise TraceFilterError(f"port {v!r} is not a number")
                p = _has_port(int(v))
        else:
            raise TraceFilterError(f"cannot read {t!r} (arp ip icmp udp tcp host port drop rx tx)")
        alts[-1].append(_not(p) if neg else p)
    if any(not a for a in alts):
        raise TraceFilterError("empty alternative around 'or'")
    return lambda f: any(all(p(f) for p in a) for a in alts)


def _has_proto(name: str) -> Pred:
    return lambda f: name in f.protos


def _is_drop(f: FrameInfo) -> bool:
    return f.drop


def _direction(d: str) -> Pred:
    return lambda f: f.direction == d


def _has_host(host: str) -> Pred:
    return lambda f: host in f.hosts


def _has_port(port: int) -> Pred:
    return lambda f: port in f.ports


def _not(p: Pred) -> Pred:
    return lambda f: not p(f)


# ---------------------------------------------------------------------------- records


def format_record(r: dict[str, Any]) -> str:
    """One text line: time (ms since the trace began), frame, layer, what, time in layer."""
    fid = r.get("frame")
    tag = f"#{fid}" if fid is not None else "-"
    us = r.get("us")
    tail = f"  ({us:.1f} us)" if us is not None else ""
    line = f"{r['t_ms']:10.3f} {tag:>6} {r['layer']:<6} {r['text']}{tail}"
    for rule in r.get("rules") or ():
        line += f"\n{'':>17} {'':<6}   rule: {rule}"
    return line


def format_json(r: dict[str, Any]) -> str:
    return json.dumps(r, separators=(",", ":"), default=str)


# ----------------------------------------------------------------- interposition

#: id(object) -> (object, tracer) for every stack object being traced.
_ACTIVE: dict[int, tuple[Any, Tracer]] = {}
#: (class, method name) -> [what the class had under that name (or _ABSENT), users].
PATCHED: dict[tuple[type, str], list[Any]] = {}
_ABSENT = object()


def is_traced(stack: Any) -> bool:
    """Is a tracer attached to ``stack``?"""
    hit = _ACTIVE.get(id(stack))
    return hit is not None and hit[0] is stack


def _install(cls: type, name: str, traced_name: str) -> None:
    """Put a dispatching wrapper in place of ``cls.name`` (once, however many stacks of
    ``cls`` are traced). The wrapper calls the original at once for an object nobody
    traces, and the tracer's ``traced_name`` method for one that is traced.

    Why the class and not the instance: writing a method into an instance's ``__dict__``
    (or swapping its ``__class__``) turns CPython's compact instance attributes into a real
    dict for good, and every ``self.x`` of the stack is slower afterwards -- measurably
    (~2 % per request). The class gets its original attribute back when the last traced
    stack detaches, and an untraced instance never changes.
    """
    entry = PATCHED.get((cls, name))
    if entry is not None:
        entry[1] += 1
        return
    had = cls.__dict__.get(name, _ABSENT)
    orig = getattr(cls, name)

    def wrapper(self: Any, *args: Any, **kw: Any) -> Any:
        hit = _ACTIVE.get(id(self))
        if hit is None or hit[0] is not self:
            return orig(self, *args, **kw)
        tracer = hit[1]
        t_in = tracer.clock()
        try:
            return getattr(tracer, traced_name)(types.MethodType(orig, self), *args, **kw)
        finally:
            tracer._charge(t_in)

    wrapper.__name__ = name
    wrapper.__qualname__ = f"{cls.__qualname__}.{name}"
    wrapper.__doc__ = getattr(orig, "__doc__", None)
    wrapper.__wrapped__ = orig  # type: ignore[attr-defined]
    setattr(cls, name, wrapper)
    PATCHED[(cls, name)] = [had, 1]


def _uninstall(cls: type, name: str) -> None:
    entry = PATCHED.get((cls, name))
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del PATCHED[(cls, name)]
    if entry[0] is _ABSENT:
        delattr(cls, name)
    else:
        setattr(cls, name, entry[0])


# ---------------------------------------------------------------------------- tracer


@dataclass
class _Frame:
    fid: int | None
    records: list[dict[str, Any]] = field(default_factory=list)
    info: FrameInfo = field(default_factory=FrameInfo)


class Tracer:
    """Traces one :class:`~anp_async.Stack` while attached.

    ``sink(record)`` gets each record (a JSON-ready dict; :func:`format_record` prints
    it) of every frame the filter accepts, frame by frame, after the frame's batch ends.
    ``count`` stops after that many frames (then ``done`` is True and the tracer detaches
    itself). ``clock`` returns nanoseconds (perf_counter_ns).
    """

    #: (object attribute path, traced method name) pairs attach() installs.
    HOOKS = (
        ("", "_rx_frame"), ("", "_rx_arp"), ("", "_rx_ipv4"), ("", "_rx_icmp"),
        ("", "send_frame"), ("tcp", "input"), ("tcp", "flush_dirty"), ("udp", "input"),
    )  # fmt: skip

    def __init__(
        self,
        stack: Any,
        sink: Callable[[dict[str, Any]], None],
        *,
        count: int | None = None,
        filter: str | None = None,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.stack = stack
        self.sink = sink
        self.count = count
        self.pred = parse_filter(filter)
        self.clock = clock
        self.t0 = clock()
        self.emitted = 0
        self.done = False
        self.attached = False
        self._fast_path_was: bool | None = None
        self._fid = 0
        self._batch_no = 0
        self._batch: list[_Frame] = []
        self._frame: _Frame | None = None
        self._child: list[int] = []  # time spent in nested layers, per open layer
        self._ep_frame: dict[int, _Frame] = {}  # id(endpoint) -> frame that touched it
        self._flush_frame: _Frame | None = None
        self._wake: dict[str, Any] | None = None  # the batch's wake-up line

    # -- attaching ----------------------------------------------------------------------

    def _target(self, path: str) -> Any:
        return self.stack if not path else getattr(self.stack, path)

    def attach(self) -> Tracer:
        """Start tracing (a stack has at most one tracer)."""
        if is_traced(self.stack):
            raise RuntimeError("this stack is already being traced")
        for path, name in self.HOOKS:
            obj = self._target(path)
            _ACTIVE[id(obj)] = (obj, self)
            _install(type(obj), name, f"_t_{path or 'stack'}_{name.lstrip('_')}")
        # The established-connection fast path skips the layers traced here: off while
        # attached, so every frame walks them.
        self._fast_path_was = getattr(self.stack, "fast_path", None)
        if self._fast_path_was is not None:
            self.stack.fast_path = False
        self.attached = True
        return self

    def detach(self) -> None:
        """Stop tracing: the stack's classes get their own methods back once no stack is
        traced any more (nothing of the tracer is left on the stack's objects)."""
        if not self.attached:
            return
        for path, name in self.HOOKS:
            obj = self._target(path)
            _ACTIVE.pop(id(obj), None)
            _uninstall(type(obj), name)
        if self._fast_path_was is not None:
            self.stack.fast_path = self._fast_path_was
        self.attached = False
        self._emit_batch()

    # -- helpers ------------------------------------------------------------------------

    def _now_ms(self) -> float:
        return (self.clock() - self.t0) / 1e6

    def _rec(self, layer: str, text: str, **fields: Any) -> dict[str, Any]:
        fr = self._frame or self._flush_frame
        r: dict[str, Any] = {"t_ms": round(self._now_ms(), 4), "frame": fr.fid if fr else None,
                             "layer": layer, "text": text}  # fmt: skip
        r.update({k: v for k, v in fields.items() if v is not None})
        if fr is None:  # the stack sent this on its own (timer, application)
            alone = _Frame(None, [r])
            alone.info.direction = "tx"
            self._deliver(alone)
        else:
            fr.records.append(r)
        return r

    @staticmethod
    def _note(info: FrameInfo, r: dict[str, Any]) -> None:
        if r["layer"] not in ("tx", "app", "wake"):
            info.protos.add(r["layer"])
        for k in ("src", "dst"):
            if k in r:
                info.hosts.add(str(r[k]))
        for k in ("sport", "dport"):
            if k in r:
                info.ports.add(int(r[k]))
        if "proto" in r:
            info.protos.add(str(r["proto"]))
        if r.get("drop"):
            info.drop = True

    def _timed(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
        """Call ``fn``; return its result and its exclusive time in microseconds: the time
        of the nested layers' traced calls -- their work and the tracer's own -- is taken
        out (each traced method charges its whole duration to its caller, :meth:`_charge`)."""
        self._child.append(0)
        t0 = self.clock()
        try:
            res = fn(*args)
        finally:
            dt = self.clock() - t0
            child = self._child.pop()
        return res, max(0, dt - child) / 1e3

    def _charge(self, t_enter: int) -> None:
        """A traced method ends: its whole time (tracer included) belongs to its caller's
        nested layers, not to the caller's own."""
        if self._child:
            self._child[-1] += self.clock() - t_enter

    def _deliver(self, fr: _Frame) -> None:
        for r in fr.records:  # the layers' decisions are final now
            self._note(fr.info, r)
        if self.done or not self.pred(fr.info):
            return
        for r in fr.records:
            self.sink(r)
        self.emitted += 1
        if self.count is not None and self.emitted >= self.count:
            self.done = True

    def _emit_batch(self) -> None:
        frames, self._batch = self._batch, []
        if self._wake is not None and frames:
            self._wake["frames"] = len(frames)
            self._wake["text"] += f", {len(frames)} frame{'s' if len(frames) > 1 else ''}"
        self._wake = None
        for fr in frames:
            self._deliver(fr)
        if self.done and self.attached:
            self.detach()

    # -- receive ------------------------------------------------------------------------

    def _t_stack_rx_frame(self, orig: Callable[..., Any], frame: Any) -> None:
        stack = self.stack
        if not self._batch:
            self._batch_no += 1
        self._fid += 1
        fr = _Frame(self._fid)
        self._batch.append(fr)
        self._frame = fr
        if len(self._batch) == 1:
            mode = stack._mode
            ms = mode.stats if mode is not None else None
            wake = ms.wakeups if ms is not None else 0
            self._wake = self._rec(
                "wake", f"batch {self._batch_no}: mode {stack.mode_name}"
                + (f" ({','.join(f'{k}={v}' for k, v in stack.mode_params.items())})"
                   if stack.mode_params else "")
                + f", wake-up {wake}", batch=self._batch_no, mode=stack.mode_name,
            )  # fmt: skip
        before = dict(stack.eth_counters)
        try:
            dst, src, etype, payload = parse_ethernet(frame)
            desc = (f"{mac_to_str(src)} > {mac_to_str(dst)} "
                    f"{ {ETH_P_IP: 'IPv4', ETH_P_ARP: 'ARP', ETH_P_IPV6: 'IPv6'}.get(etype, hex(etype)) }"
                    f" {len(frame)} B")  # fmt: skip
        except ParseError as e:
            desc = f"{len(frame)} B unparsable ({e.reason})"
        rec = self._rec("eth", desc)
        try:
            _, us = self._timed(orig, frame)
        finally:
            self._frame = None
        moved = _moved("eth", before, dict(stack.eth_counters))
        self._decide(rec, moved, us)

    def _decide(self, rec: dict[str, Any], moved: dict[str, int], us: float) -> None:
        rec["us"] = round(us, 2)
        if moved:
            rec["counters"] = moved
            rec["text"] += " -> " + ", ".join(f"{k}+{v}" for k, v in moved.items())
            rules = rules_for(moved)
            if rules:
                rec["rules"] = rules
            if any(
                w in k for k in moved
                for w in ("drop", "bad", "not_for_us", "unknown", "truncated", "ignored",
                          "no_port", "unmatched", "to_closed", "overflow", "failed")
            ):  # fmt: skip
                rec["drop"] = True

    def _t_stack_rx_arp(self, orig: Callable[..., Any], payload: Any) -> None:
        stack = self.stack
        try:
            p = parse_arp(payload)
            op = {1: "who-has", 2: "reply"}.get(p.op, f"op {p.op}")
            if p.op == 1:
                desc = f"who-has {ip_to_str(p.target_ip)} tell {ip_to_str(p.sender_ip)}"
            else:
                desc = f"{op} {ip_to_str(p.sender_ip)} is-at {mac_to_str(p.sender_mac)}"
            src, dst = ip_to_str(p.sender_ip), ip_to_str(p.target_ip)
        except ParseError as e:
            desc, src, dst = f"unparsable ({e.reason})", None, None
        before = dict(stack.arp.counters)
        eth0 = dict(stack.eth_counters)
        rec = self._rec("arp", desc, src=src, dst=dst)
        _, us = self._timed(orig, payload)
        moved = _moved("arp", before, dict(stack.arp.counters)) | _moved(
            "eth", eth0, dict(stack.eth_counters)
        )
        self._decide(rec, moved, us)

    def _t_stack_rx_ipv4(self, orig: Callable[..., Any], payload: Any, src_mac: bytes) -> None:
        stack = self.stack
        fields: dict[str, Any] = {}
        try:
            hdr, _ = parse_ipv4(payload, verify_checksum=False)
            proto = PROTO_NAMES.get(hdr.proto, str(hdr.proto))
            desc = (f"{ip_to_str(hdr.src)} > {ip_to_str(hdr.dst)} {proto} len {hdr.total_length}"
                    f" id {hdr.ident} ttl {hdr.ttl}")  # fmt: skip
            if hdr.is_fragment:
                desc += f" frag off {hdr.frag_offset}{' MF' if hdr.mf else ''}"
            fields = {"src": ip_to_str(hdr.src), "dst": ip_to_str(hdr.dst), "proto": proto}
        except ParseError as e:
            desc = f"unparsable ({e.reason})"
        reasm = getattr(getattr(stack, "reassembler", None), "counters", None)
        before = dict(stack.ip_counters)
        r0 = dict(reasm) if reasm is not None else {}
        rec = self._rec("ip", desc, **fields)
        _, us = self._timed(orig, payload, src_mac)
        moved = _moved("ip", before, dict(stack.ip_counters))
        if reasm is not None:
            moved |= _moved("ip.reassembly", r0, dict(reasm))
        self._decide(
            rec, {k.replace("reassembly.", "reassembly_"): v for k, v in moved.items()}, us
        )

    def _t_stack_rx_icmp(self, orig: Callable[..., Any], hdr: Any, data: Any) -> None:
        stack = self.stack
        try:
            m = parse_icmp(data, verify_checksum=False)
            name = ICMP_TYPES.get(m.type, f"type {m.type}")
            desc = f"{name} code {m.code}"
            if m.type in (0, 8):
                desc += f" id {m.ident} seq {m.seq} {len(data) - 8} B data"
        except ParseError as e:
            desc = f"unparsable ({e.reason})"
        before = dict(stack.icmp_counters)
        rec = self._rec("icmp", desc)
        _, us = self._timed(orig, hdr, data)
        moved = _moved("icmp", before, dict(stack.icmp_counters))
        self._decide(rec, moved, us)
        if "icmp.echo_replies" in moved:
            self._rec("app", "stack.ping() returns: reply matched its request")

    def _t_udp_input(self, orig: Callable[..., Any], hdr: Any, data: Any, ip_packet: Any) -> None:
        udp = self.stack.udp
        fields: dict[str, Any] = {}
        if len(data) >= 8:
            sport, dport = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
            desc = f"{sport} > {dport} len {int.from_bytes(data[4:6], 'big')}"
            fields = {"sport": sport, "dport": dport}
            if len(hdr.src) == 16:  # IPv6: no ip line before this one names the hosts
                fields |= {"src": _addr(hdr.src), "dst": _addr(hdr.dst)}
        else:
            desc = f"{len(data)} B: shorter than a UDP header"
        before = dict(udp.counters)
        rec = self._rec("udp", desc, **fields)
        _, us = self._timed(orig, hdr, data, ip_packet)
        moved = _moved("udp", before, dict(udp.counters))
        self._decide(rec, moved, us)
        if dict(udp.counters).get("rx_datagrams", 0) > before.get("rx_datagrams", 0):
            self._rec(
                "app", f"protocol.datagram_received({len(data) - 8} B) on port {fields['dport']}"
            )

    def _tcp_state(self, key: tuple[bytes, int, int]) -> tuple[str, Any]:
        tcp = self.stack.tcp
        ep = tcp.conns.get(key)
        if ep is not None:
            return ep.conn.state.value, ep
        return ("LISTEN" if tcp.host.listener_for(key[2], key[0]) else "CLOSED"), None

    def _t_tcp_input(self, orig: Callable[..., Any], hdr: Any, data: Any) -> None:
        tcp = self.stack.tcp
        fields: dict[str, Any] = {}
        key = None
        try:
            seg = parse_tcp(data, hdr.src, hdr.dst, verify_checksum=False)
            desc = (f"{seg.src_port} > {seg.dst_port} [{flags_str(seg.flags)}] seq {seg.seq}"
                    f" ack {seg.ack} win {seg.window} len {len(seg.payload)}")  # fmt: skip
            fields = {"sport": seg.src_port, "dport": seg.dst_port}
            if len(hdr.src) == 16:  # IPv6: no ip line before this one names the hosts
                fields |= {"src": _addr(hdr.src), "dst": _addr(hdr.dst)}
            key = (bytes(hdr.src), seg.src_port, seg.dst_port)
        except ParseError as e:
            desc = f"unparsable ({e.reason})"
        state0, ep0 = self._tcp_state(key) if key else ("?", None)
        c0 = dict(tcp.counters)
        cc0 = dict(ep0.conn.counters) if ep0 is not None else {}
        rec = self._rec("tcp", desc, **fields)
        _, us = self._timed(orig, hdr, data)
        state1, ep1 = self._tcp_state(key) if key else ("?", None)
        moved = _moved("tcp", c0, dict(tcp.counters))
        if ep1 is not None:
            moved |= _moved("conn", cc0 if ep1 is ep0 else {}, dict(ep1.conn.counters))
            if self._frame is not None:
                self._ep_frame[id(ep1)] = self._frame
        rec["state"] = [state0, state1]
        rec["text"] += f" | {state0} -> {state1}" if state0 != state1 else f" | {state1}"
        self._decide(rec, moved, us)

    def _t_tcp_flush_dirty(self, orig: Callable[..., Any]) -> None:
        """End of the receive batch: TCP output and the transport calls it causes.

        Every output pass runs here, at the batch's end, so each connection's segments
        show beside the frame that caused them: under trace, ``flush_dirty``'s deferral
        (a reply carrying the batch's ACK) is off and a pure ACK may precede the reply."""
        tcp = self.stack.tcp
        dirty = getattr(tcp, "dirty", None)
        if dirty is None:  # a layer without the dirty set: no per-connection detail
            orig()
            self._emit_batch()
            return
        while dirty:
            ep = next(iter(dirty))
            del dirty[ep]
            self._flush_frame = self._ep_frame.pop(id(ep), None) or (
                self._batch[-1] if self._batch else None
            )
            before = self._ep_snapshot(ep)
            try:
                ep.flush()
            finally:
                self._app_calls(ep, before)
                self._flush_frame = None
        self._ep_frame.clear()
        self._emit_batch()

    @staticmethod
    def _ep_snapshot(ep: Any) -> dict[str, Any]:
        conn = ep.conn
        return {
            "state": conn.state.value, "avail": conn.recv_available,
            "eof": ep.eof_received, "transport": ep.transport is not None,
            "waiter": ep.connect_waiter is not None, "closed": ep.closed_reason,
            "listener": ep.listener is not None,
        }  # fmt: skip

    def _app_calls(self, ep: Any, b: dict[str, Any]) -> None:
        a = self._ep_snapshot(ep)
        who = f"{_hp(_addr(ep.key[0]), ep.key[1])} <-> :{ep.key[2]}"
        if b["waiter"] and not a["waiter"]:
            self._rec(
                "app", f"connect completes: open_connection()/create_connection() returns ({who})"
            )
        if b["listener"] and not a["listener"] and a["state"] == "ESTABLISHED":
            self._rec("app", f"accepted: server's protocol.connection_made() ({who})")
        got = b["avail"] - a["avail"]
        if got > 0 and a["transport"]:
            self._rec("app", f"protocol.data_received({got} B) ({who})")
        if a["eof"] and not b["eof"]:
            self._rec("app", f"protocol.eof_received(): peer sent FIN ({who})")
        if a["closed"] is not None and b["closed"] is None:
            self._rec("app", f"protocol.connection_lost({a['closed']}) ({who})")

    # -- transmit -----------------------------------------------------------------------

    def _t_stack_send_frame(
        self, orig: Callable[..., Any], dst_mac: bytes, ethertype: int, parts: list[Any],
        vnet: bytes | None = None,
    ) -> None:  # fmt: skip
        alone = None
        if self._frame is None and self._flush_frame is None:
            # Sent on the stack's own initiative (a timer, the application): a frame of its
            # own, delivered once its time is known.
            alone = self._frame = _Frame(None)
            alone.info.direction = "tx"
        try:
            desc, fields = self._describe_tx(ethertype, parts)
            rec = self._rec("tx", desc, **fields)
            _, us = self._timed(orig, dst_mac, ethertype, parts, vnet)
            rec["us"] = round(us, 2)
        finally:
            if alone is not None:
                self._frame = None
                self._deliver(alone)

    @staticmethod
    def _describe_tx(ethertype: int, parts: list[Any]) -> tuple[str, dict[str, Any]]:
        size = sum(len(p) for p in parts) + 14
        head = bytes(parts[0][:60]) if parts else b""
        if ethertype == ETH_P_ARP:
            try:
                p = parse_arp(b"".join(bytes(x) for x in parts))
                if p.op == 1:
                    text = f"ARP who-has {ip_to_str(p.target_ip)} tell {ip_to_str(p.sender_ip)}"
                else:
                    text = f"ARP reply {ip_to_str(p.sender_ip)} is-at {mac_to_str(p.sender_mac)}"
                return f"{text} {size} B", {"proto": "arp"}
            except ParseError:
                return f"ARP {size} B", {"proto": "arp"}
        if ethertype == ETH_P_IPV6 and len(head) >= 40:
            # The fixed IPv6 header; extension headers are not followed here.
            proto = PROTO_NAMES.get(head[6], "icmp6" if head[6] == 58 else str(head[6]))
            src, dst = _addr(head[8:24]), _addr(head[24:40])
            ihl, family = 40, "IPv6"
        elif ethertype == ETH_P_IP and len(head) >= 20:
            proto = PROTO_NAMES.get(head[9], str(head[9]))
            src, dst = ip_to_str(head[12:16]), ip_to_str(head[16:20])
            ihl, family = (head[0] & 0xF) * 4, "IPv4"
        else:
            return f"ethertype {hex(ethertype)} {size} B", {}
        fields: dict[str, Any] = {"src": src, "dst": dst, "proto": proto}
        l4 = head[ihl:]
        if len(l4) < ihl + 4 and len(parts) > 1:
            l4 = (head + bytes(parts[1][:40]))[ihl:]
        text = f"{family} {src} > {dst} {proto} {size} B"
        if proto == "tcp" and len(l4) >= 20:
            sp, dp = int.from_bytes(l4[0:2], "big"), int.from_bytes(l4[2:4], "big")
            seq, ack = int.from_bytes(l4[4:8], "big"), int.from_bytes(l4[8:12], "big")
            hl = (l4[12] >> 4) * 4
            plen = sum(len(p) for p in parts) - ihl - hl
            text = (f"TCP {_hp(src, sp)} > {_hp(dst, dp)} [{flags_str(l4[13])}] seq {seq} ack {ack}"
                    f" win {int.from_bytes(l4[14:16], 'big')} len {plen}")  # fmt: skip
            fields |= {"sport": sp, "dport": dp}
        elif proto == "udp" and len(l4) >= 8:
            sp, dp = int.from_bytes(l4[0:2], "big"), int.from_bytes(l4[2:4], "big")
            text = f"UDP {_hp(src, sp)} > {_hp(dst, dp)} len {int.from_bytes(l4[4:6], 'big')}"
            fields |= {"sport": sp, "dport": dp}
        elif proto == "icmp" and len(l4) >= 8:
            name = ICMP_TYPES.get(l4[0], f"type {l4[0]}")
            text = f"ICMP {src} > {dst} {name}"
            if l4[0] in (0, 8):
                text += f" id {int.from_bytes(l4[4:6], 'big')} seq {int.from_bytes(l4[6:8], 'big')}"
        return text, fields


def attach(
    stack: Any,
    sink: Callable[[dict[str, Any]], None],
    *,
    count: int | None = None,
    filter: str | None = None,
) -> Tracer:
    """Start tracing ``stack`` into ``sink``; call ``.detach()`` on the result to stop."""
    return Tracer(stack, sink, count=count, filter=filter).attach()


def printer(json_lines: bool = False, file: Any = None) -> Callable[[dict[str, Any]], None]:
    """A sink that prints each record (text or one JSON object per line) to ``file``."""
    import sys

    out = file or sys.stderr

    def sink(r: dict[str, Any]) -> None:
        print(format_json(r) if json_lines else format_record(r), file=out, flush=True)

    return sink
