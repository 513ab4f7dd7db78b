"""``Stack.stats()`` in the OpenMetrics / Prometheus text exposition format.

Every counter becomes ``anp_<layer>_<name>_total`` (a counter); the receive mode's figures
carry a ``mode`` label; gauges (open connections, ARP entries, and per connection
``anp_tcp_sock_cwnd``, ``_srtt``, ``_rto`` ... labelled with its addresses and state) keep
their names; every sample carries ``stack="<address>"``. With ``openmetrics=True`` the text
ends in ``# EOF`` as OpenMetrics 1.0 requires; without it it is Prometheus' text format
0.0.4 (the same lines).
"""

from __future__ import annotations

import re
from typing import Any

from .rates import GAUGES, flatten

OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Per-connection figures exported as gauges, with their help text.
CONN_GAUGES = {
    "cwnd": "congestion window (bytes)",
    "ssthresh": "slow-start threshold (bytes)",
    "srtt": "smoothed round-trip time (seconds)",
    "rttvar": "round-trip time variation (seconds)",
    "rto": "retransmission timeout (seconds)",
    "snd_wnd": "peer's advertised window (bytes)",
    "rcv_wnd": "our advertised window (bytes)",
    "bytes_sent": "bytes sent (with retransmissions)",
    "bytes_retrans": "bytes retransmitted",
    "bytes_received": "bytes received in order",
    "retransmits": "retransmitted segments",
    "send_queued": "bytes waiting in the send buffer",
    "recv_queued": "bytes waiting for the application",
}

_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _name(*parts: str) -> str:
    return "anp_" + "_".join(_BAD.sub("_", p) for p in parts if p)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kw: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in kw.items()) + "}"


def _num(v: float) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(int(v))


def render(stats: dict[str, Any], openmetrics: bool = True) -> str:
    """The exposition text of one ``stats()`` snapshot."""
    stack = str(stats.get("address", ""))
    lines: list[str] = []
    mode = stats.get("mode") or {}
    mode_name = str(mode.get("name", ""))
    families: dict[str, tuple[str, list[tuple[str, float]]]] = {}

    def add(name: str, kind: str, labels: str, value: float) -> None:
        fam = families.setdefault(name, (kind, []))
        fam[1].append((labels, value))

    # The current receive mode as an info-style gauge.
    add("anp_mode_info", "gauge", _labels(stack=stack, mode=mode_name), 1)
    for k, v in (mode.get("params") or {}).items():
        add(_name("mode", "param", k), "gauge", _labels(stack=stack, mode=mode_name), v)
    flat = flatten({k: v for k, v in stats.items() if k not in ("address", "mac")})
    flat = {k: v for k, v in flat.items() if not k.startswith("tcp.listen_queues.")}
    for key, v in flat.items():
        if key.startswith("mode.params."):
            continue
        if key.startswith("mode.totals_all_modes."):
            continue
        parts = key.split(".")
        if key in GAUGES or parts[-1] in ("entries", "endpoints", "open_connections", "vnet_hdr"):
            add(_name(*parts), "gauge", _labels(stack=stack), v)
        elif parts[0] == "mode":
            add(_name(*parts), "counter", _labels(stack=stack, mode=mode_name), v)
        else:
            add(_name(*parts), "counter", _labels(stack=stack), v)
    tcp = stats.get("tcp") or {}
    add("anp_tcp_listeners", "gauge", _labels(stack=stack), len(tcp.get("listeners") or []))
    for port, q in (tcp.get("listen_queues") or {}).items():
        for field in ("half_open", "backlog"):
            add(_name("tcp", "listen", field), "gauge", _labels(stack=stack, port=port), q[field])
    for c in tcp.get("connections") or []:
        lab = _labels(
            stack=stack, local=c.get("local", ""), remote=c.get("remote", ""),
            state=c.get("state", ""),
        )  # fmt: skip
        for field in CONN_GAUGES:
            v = c.get(field)
            if isinstance(v, int | float) and not isinstance(v, bool):
                add(_name("tcp", "sock", field), "gauge", lab, v)
    for name, (kind, samples) in families.items():
        base = name[: -len("_total")] if name.endswith("_total") else name
        lines.append(f"# TYPE {base} {kind}")
        if base.startswith("anp_tcp_sock_"):
            lines.append(f"# HELP {base} {CONN_GAUGES.get(base[len('anp_tcp_sock_') :], '')}")
        for labels, value in samples:
            sample = f"{base}_total" if kind == "counter" else base
            lines.append(f"{sample}{labels} {_num(value)}")
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"


def parse_text(text: str) -> dict[str, float]:
    """Sample name with labels -> value, from exposition text (for tests and tools)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out
