"""An in-memory cable: two NICs joined by a ``SOCK_SEQPACKET`` socket pair.

Each frame is one message, so frame boundaries survive, and each end is a real,
non-blocking file descriptor: ``loop.add_reader``, coalescing and busy polling behave
exactly as on a TAP. No privileges needed (tests, demos). The kernel buffer of the sending
end is the "TX ring": when it is full, frames are dropped and counted, as on a real NIC.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

from .base import Buffer, Nic

#: Socket buffer size asked for on each end (the kernel may grant less, see wmem_max).
WIRE_BUFFER = 4 * 1024 * 1024
#: Largest message read; far above any frame so nothing is truncated.
READ_SIZE = 65536 + 64


class WireNic(Nic):
    """One end of a :class:`Wire`. ``name`` identifies the end in stats and repr."""

    def __init__(self, sock: socket.socket, *, name: str = "wire", mtu: int = 1500) -> None:
        super().__init__()
        sock.setblocking(False)
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, WIRE_BUFFER)
            except OSError:
                pass  # keep the default; the kernel caps at [wr]mem_max anyway
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self.name = name
        self.mtu = mtu
        #: False once the other end has closed (recv saw end-of-file).
        self.link_up = True

    def __repr__(self) -> str:
        return f"WireNic({self.name!r}, mtu={self.mtu})"

    def fileno(self) -> int:
        if self._sock is None:
            raise ValueError("WireNic is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._sock is None

    def recv_batch(self, max_frames: int = 64) -> list[bytes]:
        """Receive up to ``max_frames`` frames without blocking."""
        frames: list[bytes] = []
        sock = self._sock
        if sock is None:
            return frames
        recv = sock.recv
        stats = self.stats
        nbytes = 0
        while len(frames) < max_frames:
            try:
                frame = recv(READ_SIZE)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:
                stats.rx_errors += 1
                break
            if not frame:
                # End-of-file: the other end closed. (A zero-length frame cannot be sent:
                # send() refuses empty frames.)
                self.link_up = False
                break
            frames.append(frame)
            nbytes += len(frame)
        stats.rx_frames += len(frames)
        stats.rx_bytes += nbytes
        return frames

    def send(self, parts: Sequence[Buffer]) -> None:
        """Send one frame made of ``parts`` (scatter-gather ``sendmsg``); never blocks."""
        stats = self.stats
        sock = self._sock
        if sock is None or not self.link_up:
            stats.tx_dropped += 1
            return
        if not any(parts):
            stats.tx_errors += 1  # an empty frame would read as end-of-file on the other side
            return
        try:
            n = sock.sendmsg(parts)
        except (BlockingIOError, InterruptedError):
            stats.tx_dropped += 1  # the other end is not reading fast enough: ring full
            return
        except OSError as e:
            if e.errno in (errno.ENOBUFS, errno.ENOMEM):
                stats.tx_dropped += 1
            elif e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOTCONN):
                self.link_up = False  # cable unplugged at the other end
                stats.tx_dropped += 1
            else:
                stats.tx_errors += 1
            return
        stats.tx_frames += 1
        stats.tx_bytes += n

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()


class Wire:
    """Factory for a pair of connected :class:`WireNic` ends."""

    @staticmethod
    def pair(
        mtu: int = 1500, names: tuple[str, str] = ("wire0", "wire1")
    ) -> tuple[WireNic, WireNic]:
        """Two NICs joined back to back: what one sends, the other receives, in order."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return WireNic(a, name=names[0], mtu=mtu), WireNic(b, name=names[1], mtu=mtu)
