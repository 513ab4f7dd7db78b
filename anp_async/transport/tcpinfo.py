"""``getsockopt(IPPROTO_TCP, TCP_INFO)``: a connection's state as Linux's ``struct tcp_info``.

Programs read it for their own reports (iperf3's retransmissions, cwnd and RTT; nginx's
``$tcpinfo_rtt``), so the stack answers with the same binary layout as the kernel: the
232 bytes of ``struct tcp_info`` up to ``tcpi_snd_wnd`` (``linux/tcp.h``; newer kernels
append fields after it, and a caller's shorter buffer gets a prefix, as from the kernel).
The figures come from ``TcpConnection.info()``. Units are Linux's: times in microseconds
(``rto``, ``ato``, ``rtt``, ``rttvar``, ``min_rtt``) or milliseconds (``last_*``), windows
and thresholds in segments, counts of bytes in bytes. What the engine does not track
(pacing, delivery rate, busy time) is 0, or "unlimited" for ``max_pacing_rate``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from ..proto.tcp.congestion import INITIAL_SSTHRESH

#: u8 state, ca_state, retransmits, probes, backoff, options, wscales, flags; 24 u32 from
#: rto to total_retrans; u64 pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
#: u32 segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out; u64
#: delivery_rate, busy_time, rwnd_limited, sndbuf_limited; u32 delivered, delivered_ce;
#: u64 bytes_sent, bytes_retrans; u32 dsack_dups, reord_seen, rcv_ooopack, snd_wnd.
TCP_INFO_STRUCT = struct.Struct("<8B24I4Q6I4Q2I2Q4I")
TCP_INFO_LEN = TCP_INFO_STRUCT.size  # 232

#: Linux's TCP state numbers (include/net/tcp_states.h) by RFC 9293 name.
LINUX_STATES = {
    "ESTABLISHED": 1, "SYN-SENT": 2, "SYN-RECEIVED": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5,
    "TIME-WAIT": 6, "CLOSED": 7, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10, "CLOSING": 11,
}  # fmt: skip
#: tcpi_ca_state values: the congestion-avoidance state machine's.
CA_OPEN, CA_RECOVERY, CA_LOSS = 0, 3, 4
#: tcpi_options bits.
OPT_TIMESTAMPS, OPT_SACK, OPT_WSCALE, OPT_ECN = 1, 2, 4, 8
_U32 = 0xFFFFFFFF
#: What Linux reports for an ssthresh not yet set (TCP_INFINITE_SSTHRESH).
INFINITE_SSTHRESH = 0x7FFFFFFF


def _us(seconds: float) -> int:
    return min(_U32, max(0, int(seconds * 1e6)))


def _segments(nbytes: int, mss: int) -> int:
    return min(_U32, -(-max(0, nbytes) // max(1, mss)))


def _number(info: Mapping[str, object], key: str) -> float:
    value = info.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def pack_tcp_info(info: Mapping[str, object], now: float, pmtu: int) -> bytes:
    """``struct tcp_info`` for a connection whose ``TcpConnection.info()`` is ``info``,
    read at ``now`` (the stack's clock), on a path of MTU ``pmtu``."""
    g = info.get

    def num(key: str) -> int:
        return int(_number(info, key))

    mss = num("mss") or 536  # (Linux's TCP_MSS_DEFAULT before a connection)
    options = 0
    if g("timestamps"):
        options |= OPT_TIMESTAMPS
    if g("sack"):
        options |= OPT_SACK
    snd_ws, rcv_ws = num("snd_wscale"), num("rcv_wscale")
    if snd_ws or rcv_ws:
        options |= OPT_WSCALE
    if g("ecn"):
        options |= OPT_ECN
    timeouts = num("timeouts_in_a_row")
    ca_state = CA_LOSS if timeouts else CA_RECOVERY if g("in_recovery") else CA_OPEN
    in_flight = (num("snd_nxt") - num("snd_una")) & _U32
    ssthresh = num("ssthresh")
    srtt = _number(info, "srtt")
    last_rx = _number(info, "last_rx")
    since_rx = min(_U32, max(0, int((now - last_rx) * 1000))) if last_rx else 0
    return TCP_INFO_STRUCT.pack(
        LINUX_STATES.get(str(g("state")), 7), ca_state, min(255, timeouts),
        min(255, num("probes_unanswered")), min(255, num("backoff")), options,
        (snd_ws & 0xF) | (rcv_ws & 0xF) << 4, 0,
        # rto, ato, snd_mss, rcv_mss
        _us(_number(info, "rto")), _us(_number(info, "delayed_ack")), mss, num("rcv_mss"),
        # unacked, sacked, lost, retrans, fackets (segments)
        _segments(in_flight, mss), _segments(num("sacked_bytes"), mss), 0, 0, 0,
        # last_data_sent, last_ack_sent, last_data_recv, last_ack_recv (ms)
        0, 0, since_rx, since_rx,
        # pmtu, rcv_ssthresh, rtt, rttvar, snd_ssthresh, snd_cwnd, advmss, reordering
        pmtu, min(_U32, num("rcv_wnd")), _us(srtt), _us(_number(info, "rttvar")),
        INFINITE_SSTHRESH if ssthresh >= INITIAL_SSTHRESH or not ssthresh
        else _segments(ssthresh, mss),
        _segments(num("cwnd"), mss), num("advmss"), 3,
        # rcv_rtt, rcv_space, total_retrans
        0, min(_U32, num("rcv_space")), min(_U32, num("retransmits")),
        # pacing_rate, max_pacing_rate (unlimited), bytes_acked, bytes_received
        0, 2**64 - 1, num("seq_acked"), num("bytes_received"),  # (Linux counts the SYN)
        # segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out
        min(_U32, num("segments_out")), min(_U32, num("segments_in")),
        min(_U32, num("not_sent")), _us(srtt), 0, 0,
        # delivery_rate, busy_time, rwnd_limited, sndbuf_limited
        0, 0, 0, 0,
        # delivered, delivered_ce
        _segments(num("bytes_acked"), mss), 0,
        # bytes_sent, bytes_retrans
        num("bytes_sent"), num("bytes_retrans"),
        # dsack_dups, reord_seen, rcv_ooopack, snd_wnd
        min(_U32, num("dsack_rx")), 0, min(_U32, num("ooo_segments_total")),
        min(_U32, num("snd_wnd")),
    )  # fmt: skip


def unconnected_tcp_info(state: str) -> bytes:
    """What Linux answers for a socket with no established connection to read figures
    from: its ``state`` ("LISTEN", "SYN-SENT" while connecting, "CLOSED"), zeros
    elsewhere."""
    return pack_tcp_info({"state": state}, 0.0, 0)
