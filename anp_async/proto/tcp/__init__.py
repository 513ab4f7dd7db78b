"""Sans-I/O TCP: segment format, connection state machine, timers, congestion control."""

from .config import TcpConfig
from .connection import TcpConnection, TcpState
from .events import Closed, Connected, DataReceived, EofReceived, SendSpace
from .isn import IsnGenerator
from .segment import (
    ACK,
    CWR,
    ECE,
    FIN,
    PSH,
    RST,
    SYN,
    URG,
    TcpOptions,
    TcpSegment,
    build_tcp,
    build_tcp_header,
    parse_tcp,
)

__all__ = [
    "ACK",
    "CWR",
    "ECE",
    "FIN",
    "PSH",
    "RST",
    "SYN",
    "URG",
    "Closed",
    "Connected",
    "DataReceived",
    "EofReceived",
    "IsnGenerator",
    "SendSpace",
    "TcpConfig",
    "TcpConnection",
    "TcpOptions",
    "TcpSegment",
    "TcpState",
    "build_tcp",
    "build_tcp_header",
    "parse_tcp",
]
