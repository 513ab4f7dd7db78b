"""The simulation's event log: one line per event, hashed into a digest.

Every frame that crosses the wire is logged with the virtual time, the direction, a short
decoding (ARP, ICMP, UDP, TCP flags/seq/ack/window/length) and a CRC of all its bytes, so
two runs of one seed have the same digest only if they put the same bytes on the wire at
the same virtual times. The decoder reads raw bytes itself and never raises: a corrupted
frame is logged as whatever its bytes say.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

__all__ = ["Trace", "describe_frame"]

_TCP_FLAGS = "FSRPAUEC"


def _ip(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def _tcp_flags(f: int) -> str:
    return "".join(c for i, c in enumerate(_TCP_FLAGS) if f & (1 << i)) or "."


def describe_frame(frame: bytes) -> str:
    """A one-line summary of an Ethernet frame (never raises)."""
    n = len(frame)
    if n < 14:
        return f"runt len={n}"
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x0806 and n >= 42:
        op = struct.unpack_from("!H", frame, 20)[0]
        spa, tpa = _ip(frame[28:32]), _ip(frame[38:42])
        what = {1: "who-has", 2: "is-at"}.get(op, f"op{op}")
        return f"ARP {what} {tpa} from {spa} {frame[22:28].hex()}"
    if ethertype != 0x0800 or n < 34:
        return f"eth type={ethertype:#06x} len={n}"
    ihl = (frame[14] & 0x0F) * 4
    total, ident = struct.unpack_from("!HH", frame, 16)
    proto = frame[23]
    src, dst = _ip(frame[26:30]), _ip(frame[30:34])
    l4 = 14 + max(ihl, 20)
    head = f"IP {src}>{dst} id={ident} len={total}"
    if proto == 6 and n >= l4 + 20:
        sp, dp, seq, ack, off, flags, win = struct.unpack_from("!HHIIBBH", frame, l4)
        plen = max(0, min(total, n - 14) - max(ihl, 20) - (off >> 4) * 4)
        return (
            f"{head} TCP {sp}>{dp} [{_tcp_flags(flags)}] seq={seq} ack={ack} win={win} plen={plen}"
        )
    if proto == 17 and n >= l4 + 8:
        sp, dp, ulen = struct.unpack_from("!HHH", frame, l4)
        return f"{head} UDP {sp}>{dp} ulen={ulen}"
    if proto == 1 and n >= l4 + 4:
        return f"{head} ICMP type={frame[l4]} code={frame[l4 + 1]}"
    return f"{head} proto={proto}"


class Trace:
    """Collects event lines and their running sha256.

    ``keep`` False hashes lines without keeping them (a run that only needs the digest).
    """

    def __init__(self, clock: object, keep: bool = False) -> None:
        self._clock = clock  # anything with .time()
        self._sha = hashlib.sha256()
        self.keep = keep
        self.lines: list[str] = []
        self.count = 0

    def log(self, kind: str, text: str) -> None:
        """Record one event at the current virtual time."""
        line = f"{self._clock.time():.9f} {kind} {text}"  # type: ignore[attr-defined]
        self._sha.update(line.encode())
        self._sha.update(b"\n")
        self.count += 1
        if self.keep:
            self.lines.append(line)

    def frame(self, where: str, frame: bytes) -> None:
        """Record one frame crossing the wire."""
        self.log(where, f"{describe_frame(frame)} crc={zlib.crc32(frame):08x}")

    @property
    def digest(self) -> str:
        return self._sha.hexdigest()
