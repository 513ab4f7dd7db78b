"""What the supervisor tells a worker process (JSON on its command line)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..proto.tcp.config import TcpConfig

#: The line a worker prints on stdout once it serves (the supervisor waits for it).
READY = "ready"


@dataclass
class WorkerSpec:
    """Everything one worker needs (JSON on its command line)."""

    index: int
    queues: int
    tap: str
    tap_fd: int
    ip: str
    mac: str
    kernel_mac: str = ""
    netns: str | None = None
    peer: str | None = None
    gateway: str | None = None
    mtu: int = 1500
    vnet_hdr: bool = True
    mode: str = "interrupt"
    mode_params: dict[str, int] = field(default_factory=dict)
    congestion: str = "newreno"
    #: The TcpConfig's fields (:func:`tcp_to_dict`); empty: the defaults with ``congestion``.
    tcp: dict[str, Any] = field(default_factory=dict)
    ip6: str | None = None
    gateway6: str | None = None
    dad_transmits: int = 1
    icmp_port_unreachable: bool = True
    #: Trace this worker's stack to stderr (the filter; "" for every frame), tagged [wI].
    trace: str | None = None
    #: Serve the host's metrics on this TCP port (asks ``host_control`` for them).
    metrics: int | None = None
    #: The host's control socket (the fan-out that answers for every worker).
    host_control: str | None = None
    loop: str = "asyncio"
    pcap: str | None = None
    control: str | None = None
    #: TCP echo (and UDP echo) port, TCP discard (sink) port, HTTP port; None: off.
    echo: int | None = None
    sink: int | None = None
    http: int | None = None
    #: "module:function": ``async function(stack, index)`` run once the stack is up.
    setup: str | None = None
    #: The socket API of preloaded programs (``anp run --queues N``): worker 0 serves this
    #: path, worker i > 0 ``preload.siblings.sibling_api_path(api, i)``; None: no API.
    api: str | None = None
    #: Descriptor this worker reads relayed ARP replies from, and the siblings' to send to.
    relay_in: int = -1
    relay_out: list[int] = field(default_factory=list)
    #: The NIC steers with nic/steering.py's function: choose ports and identifiers by it.
    steered: bool = True
    #: Run on this CPU only (sched_setaffinity); None: wherever the scheduler likes.
    cpu: int | None = None
    #: The worker's log level: the supervisor's (``anp up -v`` reaches the workers).
    log_level: int = 30

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


def tcp_to_dict(cfg: TcpConfig) -> dict[str, Any]:
    """A TcpConfig as JSON-ready fields (the challenge-ACK limiter is per host: each
    worker's stack makes its own)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "challenge_limiter"}
