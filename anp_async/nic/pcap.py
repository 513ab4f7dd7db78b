"""A tee that writes every frame, both directions, into a classic libpcap file.

The file is the format tcpdump writes (magic ``0xa1b2c3d4``, microsecond timestamps,
``LINKTYPE_ETHERNET``), so Wireshark and ``tshark -r`` read it, also while the capture is
still running: buffered records are flushed at most ``flush_interval`` seconds after they
were written (on the next write, or by a timer when an event loop is running).
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Sequence
from typing import BinaryIO

from .base import Buffer, Nic
from .vnet import VNET_HDR_LEN

PCAP_MAGIC_USEC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144

# Global header: magic, version 2.4, thiszone, sigfigs, snaplen, linktype (native order).
_FILE_HEADER = struct.Struct("=IHHiIII")
# Record header: seconds, microseconds, captured length, original length.
_RECORD_HEADER = struct.Struct("=IIII")


class PcapWriter:
    """Append Ethernet frames to a pcap file. Usable as a context manager."""

    def __init__(
        self, path: str | os.PathLike[str], *, snaplen: int = SNAPLEN, flush_interval: float = 0.1
    ) -> None:
        self.path = os.fspath(path)
        self.snaplen = snaplen
        self.flush_interval = flush_interval
        self.frames = 0
        self._f: BinaryIO | None = open(self.path, "wb")  # closed in close()
        self._f.write(_FILE_HEADER.pack(PCAP_MAGIC_USEC, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        self._f.flush()
        self._last_flush = time.monotonic()
        self.dirty = False

    @property
    def closed(self) -> bool:
        return self._f is None

    def write(self, frame_parts: Sequence[Buffer] | Buffer, ts: float | None = None) -> None:
        """Record one frame given as a buffer or a list of parts; ``ts``: Unix time."""
        f = self._f
        if f is None:
            raise ValueError("PcapWriter is closed")
        if isinstance(frame_parts, bytes | bytearray | memoryview):
            frame_parts = (frame_parts,)
        if ts is None:
            ts = time.time()
        length = 0
        for p in frame_parts:
            length += memoryview(p).nbytes
        caplen = min(length, self.snaplen)
        sec = int(ts)
        usec = int((ts - sec) * 1_000_000)
        f.write(_RECORD_HEADER.pack(sec, usec, caplen, length))
        remaining = caplen
        for p in frame_parts:
            if remaining <= 0:
                break
            mv = memoryview(p).cast("B")
            f.write(mv[:remaining] if len(mv) > remaining else mv)
            remaining -= len(mv)
        self.frames += 1
        self.dirty = True
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Push buffered records to the file, so readers see them now."""
        if self._f is not None and self.dirty:
            self._f.flush()
            self.dirty = False
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None
            f.flush()
            f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PcapNic(Nic):
    """Wrap ``inner`` and record every frame it receives and every frame sent through it.

    Sent frames are recorded when handed to the wrapped NIC (like tcpdump on the
    interface). ``stats``, ``mtu``, ``fileno`` and ``vnet_hdr`` are the wrapped NIC's; with
    ``vnet_hdr`` the virtio-net header in front of each frame is left out of the file (a
    TSO super-segment is recorded whole, as tcpdump shows it on an offloading NIC).
    ``close`` closes the file and the wrapped NIC.
    """

    def __init__(
        self, inner: Nic, path: str | os.PathLike[str], *, flush_interval: float = 0.1
    ) -> None:
        # No super().__init__(): the wrapped NIC's stats object and MTU are this one's.
        self.inner = inner
        self.stats = inner.stats
        self.mtu = inner.mtu
        self.vnet_hdr = bool(getattr(inner, "vnet_hdr", False))
        self.writer = PcapWriter(path, flush_interval=flush_interval)
        self._flush_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"PcapNic({self.inner!r}, {self.writer.path!r})"

    def fileno(self) -> int:
        return self.inner.fileno()

    def _schedule_flush(self) -> None:
        """Flush later from the event loop so the last frames of a burst reach the file."""
        if self._flush_timer is not None or not self.writer.dirty:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: flushed on a later write or at close
        self._flush_timer = loop.call_later(self.writer.flush_interval, self._timed_flush)

    def _timed_flush(self) -> None:
        self._flush_timer = None
        if not self.writer.closed:
            self.writer.flush()

    def recv_batch(self, max_frames: int = 64) -> list[bytes]:
        frames = self.inner.recv_batch(max_frames)
        if frames and not self.writer.closed:
            ts = time.time()
            skip = VNET_HDR_LEN if self.vnet_hdr else 0
            for frame in frames:
                self.writer.write((memoryview(frame)[skip:],), ts)
            self._schedule_flush()
        return frames

    def send(self, parts: Sequence[Buffer]) -> None:
        if not self.writer.closed:
            # With vnet_hdr the stack sends the virtio-net header as a part of its own.
            self.writer.write(parts[1:] if self.vnet_hdr else parts)
            self._schedule_flush()
        self.inner.send(parts)

    def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self.writer.close()
        self.inner.close()
