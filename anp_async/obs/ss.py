"""``anp ss``: the stack's sockets as ``ss -tni`` shows the kernel's.

:func:`sockets` turns ``Stack.stats()`` into one flat row per TCP connection, TCP listener
and UDP endpoint; :func:`parse_filter` reads a small ss-style filter
(``state established dport = :80 dst 10.0.0.1``); :func:`format_rows` prints them in
columns, with ``-i`` adding the ``ss -i`` line (cwnd, ssthresh, rtt/rttvar, rto,
retransmissions, SACK, window scale) under each connection.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

#: ss's state names (``ss state NAME``) -> the stack's RFC 9293 names.
SS_STATES = {
    "established": "ESTABLISHED",
    "syn-sent": "SYN-SENT",
    "syn-recv": "SYN-RECEIVED",
    "fin-wait-1": "FIN-WAIT-1",
    "fin-wait-2": "FIN-WAIT-2",
    "time-wait": "TIME-WAIT",
    "closed": "CLOSED",
    "close-wait": "CLOSE-WAIT",
    "last-ack": "LAST-ACK",
    "listening": "LISTEN",
    "listen": "LISTEN",
    "closing": "CLOSING",
    "unconn": "UNCONN",
}
#: ss's state groups.
SS_GROUPS = {
    "all": None,
    "connected": {v for v in SS_STATES.values() if v not in ("LISTEN", "CLOSED", "UNCONN")},
    "synchronized": {
        v for v in SS_STATES.values() if v not in ("LISTEN", "CLOSED", "SYN-SENT", "UNCONN")
    },
    "bucket": {"SYN-RECEIVED", "TIME-WAIT"},
    "big": {v for v in SS_STATES.values() if v not in ("SYN-RECEIVED", "TIME-WAIT")},
}
#: The short names ss prints in its State column.
SHORT_STATE = {
    "ESTABLISHED": "ESTAB",
    "SYN-SENT": "SYN-SENT",
    "SYN-RECEIVED": "SYN-RECV",
    "FIN-WAIT-1": "FIN-WAIT-1",
    "FIN-WAIT-2": "FIN-WAIT-2",
    "TIME-WAIT": "TIME-WAIT",
    "CLOSE-WAIT": "CLOSE-WAIT",
    "LAST-ACK": "LAST-ACK",
    "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
    "CLOSED": "CLOSED",
    "UNCONN": "UNCONN",
}

_OPS: dict[str, Callable[[int, int], bool]] = {
    "=": operator.eq, "==": operator.eq, "eq": operator.eq,
    "!=": operator.ne, "ne": operator.ne, "neq": operator.ne,
    "<": operator.lt, "lt": operator.lt, ">": operator.gt, "gt": operator.gt,
    "<=": operator.le, "le": operator.le, ">=": operator.ge, "ge": operator.ge,
}  # fmt: skip

Row = dict[str, Any]
Pred = Callable[[Row], bool]


def _split(addr: str) -> tuple[str, int]:
    """``"10.0.0.1:80"`` or ``"[fd00::1]:80"`` -> (host, port)."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def sockets(stats: dict[str, Any]) -> list[Row]:
    """One row per TCP connection, TCP listener and UDP endpoint of ``stats``.

    Every row has ``proto``, ``state``, ``local``, ``remote``, ``recv_q``, ``send_q``;
    connections carry the engine's ``info()`` figures too (cwnd, srtt, ...).
    """
    rows: list[Row] = []
    ip = stats.get("address", "0.0.0.0")
    tcp = stats.get("tcp") or {}
    for lst in tcp.get("listen_sockets") or []:
        # A listener's Recv-Q: connections still in SYN-RECEIVED (the stack hands each
        # established one to the server at once); Send-Q: the backlog, as ss shows it.
        # One row per listening socket: an IPv4 and an IPv6-only one on a port are two.
        row = {"proto": "tcp", "state": "LISTEN", "local": lst.get("local", f"{ip}:?"),
               "remote": "*:*", "recv_q": lst.get("half_open", 0),
               "send_q": lst.get("backlog", 0)}  # fmt: skip
        if "worker" in lst:
            row["worker"] = lst["worker"]
        rows.append(row)

    for c in tcp.get("connections") or []:
        row = dict(c)
        row["proto"] = "tcp"
        row["recv_q"] = c.get("recv_queued", 0)
        row["send_q"] = c.get("send_queued", 0)
        rows.append(row)
    for ep in (stats.get("udp") or {}).get("sockets") or []:
        row = dict(ep)
        row.setdefault("state", "UNCONN")
        row.setdefault("remote", "*:*")
        row.setdefault("recv_q", 0)
        row.setdefault("send_q", 0)
        row["proto"] = "udp"
        rows.append(row)
    return rows


class FilterError(ValueError):
    """A filter expression ``anp ss`` cannot read (the message says where)."""


def parse_filter(words: Iterable[str]) -> Pred:
    """An ss-style filter: every term must hold (terms may be joined by ``and``).

    Terms: ``state NAME`` (ss names such as ``established``, ``time-wait``, ``listening``,
    or the groups ``connected``, ``synchronized``, ``all``; repeat it for several states),
    ``sport|dport [OP] [:]PORT`` (OP one of = != < > <= >=, or eq ne lt gt le ge),
    ``src|dst ADDR[:PORT]``, and ``tcp`` / ``udp``.
    """
    toks = [t for w in words for part in w.split() for t in _tokens(part)]
    states: set[str] | None = None
    any_state = False
    preds: list[Pred] = []
    i = 0
    while i < len(toks):
        t = toks[i].lower()
        i += 1
        if t in ("and", "&&"):
            continue
        if t in ("tcp", "udp"):
            preds.append(_field_in("proto", frozenset({t})))
        elif t in ("state", "exclude"):
            if i >= len(toks):
                raise FilterError(f"'{t}' needs a state name")
            name = toks[i].lower()
            i += 1
            if name in SS_GROUPS:
                grp = SS_GROUPS[name]
                any_state = any_state or grp is None
                group = set(SS_STATES.values()) if grp is None else grp
            elif name in SS_STATES:
                group = {SS_STATES[name]}
            else:
                raise FilterError(f"unknown state {name!r} (e.g. established, time-wait)")
            if t == "exclude":
                preds.append(_negate(_field_in("state", frozenset(group))))
            else:
                states = (states or set()) | group
        elif t in ("sport", "dport"):
            op = "="
            if i < len(toks) and toks[i].lower() in _OPS:
                op = toks[i].lower()
                i += 1
            if i >= len(toks):
                raise FilterError(f"'{t}' needs a port, e.g. {t} = :80")
            number = _port(toks[i])
            i += 1
            preds.append(_port_cmp("local" if t == "sport" else "remote", _OPS[op], number))
        elif t in ("src", "dst"):
            if i >= len(toks):
                raise FilterError(f"'{t}' needs an address, e.g. {t} 10.0.0.1")
            host, port = _host_port(toks[i])
            i += 1
            preds.append(_addr_is("local" if t == "src" else "remote", host, port))
        else:
            raise FilterError(f"cannot read {toks[i - 1]!r} in the filter")
    if states is not None and not any_state:
        preds.append(_field_in("state", frozenset(states)))
    return lambda r: all(p(r) for p in preds)


def _field_in(key: str, values: frozenset[str]) -> Pred:
    return lambda r: r[key] in values


def _negate(p: Pred) -> Pred:
    return lambda r: not p(r)


def _port_cmp(side: str, op: Callable[[int, int], bool], port: int) -> Pred:
    return lambda r: op(_split(r[side])[1], port)


def _addr_is(side: str, host: str, port: str) -> Pred:
    return lambda r: _addr_match(r[side], host, port)


def _tokens(word: str) -> list[str]:
    # "dport=:80" and "dport==80" read like "dport = :80".
    for op in ("<=", ">=", "!=", "==", "=", "<", ">"):
        if op in word and word != op:
            a, _, b = word.partition(op)
            return [x for x in (a, op, b) if x]
    return [word]


def _host_port(text: str) -> tuple[str, str]:
    """A filter's ``ADDR[:PORT]``: ``10.0.0.1:80``, ``[fd00::1]:80`` or a bare address."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest.lstrip(":")
    if text.count(":") > 1:  # a bare IPv6 address
        return text, ""
    host, _, port = text.partition(":")
    return host, port


def _port(text: str) -> int:
    t = text.lstrip(":")
    if not t.isdigit() or not 0 <= int(t) <= 65535:
        raise FilterError(f"{text!r} is not a port")
    return int(t)


def _addr_match(addr: str, host: str, port: str) -> bool:
    h, p = _split(addr)
    if host not in ("", "*") and h != host.strip("[]"):
        return False
    return not port or port == "*" or str(p) == port.lstrip(":")


def _num(v: Any, scale: float = 1.0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        v = v * scale
        return f"{v:.3f}".rstrip("0").rstrip(".") or "0"
    return str(v)


def info_line(r: Row) -> str:
    """The ``ss -i`` line of one connection: congestion, windows, timers, retransmissions."""
    if r.get("proto") != "tcp" or "cwnd" not in r:
        return ""
    parts = [str(r.get("congestion", ""))]
    if r.get("snd_wscale") is not None:
        parts.append(f"wscale:{r.get('snd_wscale')},{r.get('rcv_wscale')}")
    parts.append(f"rto:{_num(r.get('rto'), 1000.0)}")
    srtt = r.get("srtt")
    if srtt is not None:
        parts.append(f"rtt:{_num(srtt, 1000.0)}/{_num(r.get('rttvar'), 1000.0)}")
    parts.append(f"mss:{r.get('mss')}")
    parts.append(f"cwnd:{r.get('cwnd')}")
    ss = r.get("ssthresh")
    if ss is not None and ss < 1 << 30:
        parts.append(f"ssthresh:{ss}")
    parts.append(f"bytes_sent:{r.get('bytes_sent', 0)}")
    if r.get("bytes_retrans"):
        parts.append(f"bytes_retrans:{r['bytes_retrans']}")
    parts.append(f"bytes_acked:{r.get('bytes_acked', 0)}")
    parts.append(f"bytes_received:{r.get('bytes_received', 0)}")
    parts.append(f"retrans:{r.get('retransmits', 0)}")
    parts.append(f"snd_wnd:{r.get('snd_wnd')} rcv_wnd:{r.get('rcv_wnd')}")
    if r.get("sack"):
        parts.append("sack")
        if r.get("sacked_bytes"):
            parts.append(f"sacked:{r['sacked_bytes']} holes:{r.get('sack_holes', 0)}")
    if r.get("timestamps"):
        parts.append("ts")
    if r.get("in_recovery"):
        parts.append("recovery" + (":sack" if r.get("sack_recovery") else ""))
    if r.get("ooo_segments"):
        parts.append(f"ooo:{r['ooo_segments']}")
    return " ".join(p for p in parts if p)


COLUMNS = (
    ("Netid", "proto"), ("State", "state"), ("Recv-Q", "recv_q"), ("Send-Q", "send_q"),
    ("Local Address:Port", "local"), ("Peer Address:Port", "remote"),
)  # fmt: skip


def format_rows(rows: list[Row], info: bool = False, width: int = 100) -> str:
    """The rows as ``ss`` prints them; ``info`` adds the indented ``-i`` line, folded to
    ``width`` columns."""
    table: list[list[str]] = [[h for h, _ in COLUMNS]]
    for r in rows:
        cells: list[str] = []
        for _, key in COLUMNS:
            v = str(r.get(key, ""))
            cells.append(SHORT_STATE.get(v, v) if key == "state" else v)
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    right = {2, 3}
    out = []
    for n, cells in enumerate(table):
        line = " ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        )
        out.append(line.rstrip())
        if info and n > 0:
            extra = info_line(rows[n - 1])
            if extra:
                out.extend(_fold(extra, width - 2, "\t "))
    return "\n".join(out)


def _fold(text: str, width: int, indent: str) -> list[str]:
    lines: list[str] = []
    cur = ""
    for word in text.split(" "):
        if cur and len(cur) + 1 + len(word) > max(width, 20):
            lines.append(indent + cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        lines.append(indent + cur)
    return lines
