"""getsockopt(TCP_INFO)'s packing (``transport/tcpinfo.py``) against the system's own
``struct tcp_info``: a C program built from <linux/tcp.h> prints each field's offset and
size, and every field the stack fills must read back there with its Linux unit."""

from __future__ import annotations

import struct
import subprocess

import pytest

from anp_async.transport.tcpinfo import (
    INFINITE_SSTHRESH,
    TCP_INFO_LEN,
    pack_tcp_info,
    unconnected_tcp_info,
)
from tests import capps

_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, int]]:
    exe = capps.compile_one("tcp_info_layout", str(tmp_path_factory.mktemp("ti") / "ti"))
    out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    return {name: (int(off), int(size)) for name, off, size in (ln.split() for ln in out.splitlines())}


def _read(raw: bytes, layout: dict[str, tuple[int, int]], field: str) -> int:
    off, size = layout[field]
    return struct.unpack_from("<" + _FMT[size], raw, off)[0]


INFO = {
    "state": "ESTABLISHED", "in_recovery": True, "timeouts_in_a_row": 0, "backoff": 2,
    "probes_unanswered": 1, "timestamps": True, "sack": True, "snd_wscale": 7,
    "rcv_wscale": 9, "ecn": False, "rto": 0.204, "delayed_ack": 0.04, "mss": 1448,
    "rcv_mss": 1000, "snd_una": 5000, "snd_nxt": 5000 + 10 * 1448, "sacked_bytes": 2896,
    "last_rx": 9.75, "rcv_wnd": 65000, "srtt": 0.0015, "rttvar": 0.0005,
    "ssthresh": 20 * 1448, "cwnd": 30 * 1448, "advmss": 1448, "rcv_space": 70000,
    "retransmits": 4, "seq_acked": 123457, "bytes_received": 98765, "segments_out": 300,
    "segments_in": 200, "not_sent": 4444, "bytes_acked": 123456, "bytes_sent": 130000,
    "bytes_retrans": 5792, "dsack_rx": 3, "ooo_segments_total": 6, "snd_wnd": 1 << 20,
}  # fmt: skip


def test_the_layout_is_the_systems(layout: dict[str, tuple[int, int]]) -> None:
    assert layout["size"][0] == TCP_INFO_LEN == 232
    raw = pack_tcp_info(INFO, now=10.0, pmtu=1500)
    assert len(raw) == TCP_INFO_LEN
    want = {
        "state": 1, "ca_state": 3, "retransmits": 0, "probes": 1, "backoff": 2,
        "options": 1 | 2 | 4, "rto": 204000, "ato": 40000, "snd_mss": 1448, "rcv_mss": 1000,
        "unacked": 10, "sacked": 2, "last_data_recv": 250, "last_ack_recv": 250,
        "pmtu": 1500, "rcv_ssthresh": 65000, "rtt": 1500, "rttvar": 500,
        "snd_ssthresh": 20, "snd_cwnd": 30, "advmss": 1448, "reordering": 3,
        "rcv_space": 70000, "total_retrans": 4, "max_pacing_rate": 2**64 - 1,
        "bytes_acked": 123457, "bytes_received": 98765, "segs_out": 300, "segs_in": 200,
        "notsent_bytes": 4444, "min_rtt": 1500, "delivered": 86, "bytes_sent": 130000,
        "bytes_retrans": 5792, "dsack_dups": 3, "rcv_ooopack": 6, "snd_wnd": 1 << 20,
    }  # fmt: skip
    got = {field: _read(raw, layout, field) for field in want}
    assert got == want
    # The window scales share one byte after tcpi_options: send in the low nibble.
    assert raw[layout["options"][0] + 1] == 7 | 9 << 4


def test_states_loss_and_the_unset_ssthresh(layout: dict[str, tuple[int, int]]) -> None:
    info = INFO | {"state": "TIME-WAIT", "timeouts_in_a_row": 2, "ssthresh": 1 << 31}
    raw = pack_tcp_info(info, now=10.0, pmtu=1500)
    assert _read(raw, layout, "state") == 6 and _read(raw, layout, "ca_state") == 4
    assert _read(raw, layout, "retransmits") == 2
    assert _read(raw, layout, "snd_ssthresh") == INFINITE_SSTHRESH
    listening = unconnected_tcp_info("LISTEN")
    assert _read(listening, layout, "state") == 10 and _read(listening, layout, "snd_cwnd") == 0
    assert _read(unconnected_tcp_info("SYN-SENT"), layout, "state") == 2
    assert _read(unconnected_tcp_info("CLOSED"), layout, "state") == 7
