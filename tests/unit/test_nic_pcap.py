"""The pcap tee: files that tshark decodes, during and after the capture."""

from __future__ import annotations

import asyncio
import struct
import subprocess
from pathlib import Path

from anp_async.nic.pcap import PCAP_MAGIC_USEC, PcapNic, PcapWriter
from anp_async.nic.wire import Wire


def arp_request(i: int) -> bytes:
    """An ARP who-has 10.0.0.<i> from 10.0.0.2 (a frame tshark fully dissects)."""
    src = bytes.fromhex("020000000002")
    eth = b"\xff" * 6 + src + b"\x08\x06"
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        0x0800,
        6,
        4,
        1,
        src,
        bytes([10, 0, 0, 2]),
        b"\x00" * 6,
        bytes([10, 0, 0, i]),
    )
    return eth + arp


def tshark(path: Path, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(path), "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return [line.split("\t") for line in res.stdout.splitlines()]


def test_writer_file_header(tmp_path: Path) -> None:
    path = tmp_path / "h.pcap"
    PcapWriter(path).close()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("=IHHiIII", path.read_bytes())
    assert (magic, major, minor, snaplen, linktype) == (PCAP_MAGIC_USEC, 2, 4, 262144, 1)


def test_tshark_decodes_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "w.pcap"
    frames = [arp_request(i) + bytes(i) for i in range(1, 40)]
    with PcapWriter(path) as w:
        for i, f in enumerate(frames):
            # As a list of parts, with a memoryview, and as a plain buffer.
            w.write([f[:14], memoryview(f)[14:]] if i % 2 else f, ts=1_700_000_000.25 + i)
        assert w.frames == len(frames)
    rows = tshark(path, "frame.len", "arp.dst.proto_ipv4", "frame.time_epoch")
    assert [int(r[0]) for r in rows] == [len(f) for f in frames]
    assert [r[1] for r in rows] == [f"10.0.0.{i}" for i in range(1, 40)]
    assert float(rows[3][2]) == 1_700_000_003.25


def test_snaplen_truncates_capture_but_keeps_length(tmp_path: Path) -> None:
    path = tmp_path / "s.pcap"
    with PcapWriter(path, snaplen=64) as w:
        w.write([arp_request(1), bytes(100)])
    rows = tshark(path, "frame.len", "frame.cap_len")
    assert rows == [["142", "64"]]


def test_pcap_nic_records_both_directions(tmp_path: Path) -> None:
    path = tmp_path / "n.pcap"
    a, b = Wire.pair()
    nic = PcapNic(a, path)
    for i in range(1, 6):
        nic.send([arp_request(i)[:14], arp_request(i)[14:]])
    assert [len(f) for f in b.recv_batch()] == [42] * 5
    for i in range(6, 9):
        b.send([arp_request(i)])
    assert len(nic.recv_batch()) == 3
    assert nic.stats is a.stats and a.stats.tx_frames == 5 and a.stats.rx_frames == 3
    assert nic.fileno() == a.fileno()
    nic.close()
    assert a.closed
    b.close()
    rows = tshark(path, "arp.dst.proto_ipv4")
    assert [r[0] for r in rows] == [f"10.0.0.{i}" for i in range(1, 9)]


async def test_capture_is_readable_while_running(tmp_path: Path) -> None:
    path = tmp_path / "live.pcap"
    a, b = Wire.pair()
    nic = PcapNic(a, path, flush_interval=0.01)
    try:
        for i in range(1, 4):
            nic.send([arp_request(i)])
        await asyncio.sleep(0.05)  # the flush timer runs
        assert not nic.writer.dirty
        rows = await asyncio.to_thread(tshark, path, "frame.len")
        assert rows == [["42"]] * 3
    finally:
        nic.close()
        b.close()
