"""A seeded fault injector that wraps any NIC: loss, duplication, corruption, reordering,
delay with jitter, a rate limit with a bounded queue and link flaps.

The kernel here has no netem, so the stack brings its own impairments. Every decision comes
from one ``random.Random(seed)``: the same seed and the same traffic give the same faults,
so a failing test can be replayed. Every injected fault is counted in ``fault_stats``.

Transmit path (``send``), per frame, in this order (netem's order):
link flap (down: dropped) -> loss -> CE mark -> corruption -> duplication -> rate limit (token
bucket, bounded queue) -> reorder (held back ``reorder_delay``) or delay/jitter -> the
wrapped NIC. Asymmetric impairment: give each end of a wire its own config.

Receive path (``recv_batch``): loss, corruption, duplication and reordering within the
batch read from the wrapped NIC (a held-back frame is delivered after the frame that
overtakes it, or at the end of the same batch, so it is never stuck). Delay and rate limit
apply on transmit only: put a FaultyNic on each side of a wire to impair both directions.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..counters import Counters
from .base import Buffer, Nic
from .vnet import VNET_HDR_LEN as _VNET_HDR_LEN

ETH_HEADER_LEN = 14

Direction = Literal["tx", "rx", "both"]


@dataclass(slots=True)
class FaultConfig:
    """What to inject. Probabilities are per frame in [0, 1]; times are in seconds.

    ``rate_bps`` limits the transmit rate in bits per second (None: unlimited); up to
    ``queue_limit`` frames wait for tokens, beyond that they are dropped (``rate_dropped``).
    ``rate_burst`` is the bucket size in bytes (None: one maximum-size frame).
    ``jitter`` spreads ``delay`` uniformly over ``delay ± jitter`` (never below 0), so
    jittered frames can overtake each other, as with netem.
    ``flap_every`` > 0 takes the link down for the last ``flap_down`` seconds of every
    ``flap_every`` seconds of loop time (frames sent meanwhile are lost, ``flap_dropped``).
    The schedule depends on the clock only, so both ends of a wire flap together.
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.001
    delay: float = 0.0
    jitter: float = 0.0
    corrupt: float = 0.0
    rate_bps: float | None = None
    rate_burst: int | None = None
    queue_limit: int = 1000
    seed: int = 0
    direction: Direction = "both"
    flap_every: float = 0.0
    flap_down: float = 0.0
    # RFC 3168 (5): probability that an ECN-capable (ECT) IPv4 packet is marked CE instead
    # of being dropped, as an AQM router does; Not-ECT packets pass unchanged (transmit).
    ce_mark: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt", "ce_mark"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if self.delay < 0 or self.jitter < 0 or self.reorder_delay < 0:
            raise ValueError("delay, jitter and reorder_delay must be >= 0")
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError("rate_bps must be > 0 (or None for unlimited)")
        if self.flap_every < 0 or not 0 <= self.flap_down <= self.flap_every:
            raise ValueError("flap_every must be >= 0 and flap_down within [0, flap_every]")
        if self.queue_limit < 0:
            raise ValueError("queue_limit must be >= 0")
        if self.direction not in ("tx", "rx", "both"):
            raise ValueError(f"direction must be 'tx', 'rx' or 'both', got {self.direction!r}")


def _fault_counters() -> Counters:
    return Counters.zeros(
        ("dropped", "duplicated", "corrupted", "reordered", "delayed", "rate_dropped",
         "flap_dropped", "ce_marked")
    )  # fmt: skip


class FaultyNic(Nic):
    """Wrap ``inner`` and impair its traffic as ``config`` says.

    ``fileno``, ``mtu`` and ``stats`` are the wrapped NIC's (its counters show what really
    crossed the device); ``fault_stats`` counts what was injected. Timers run on ``loop``
    (default: the running loop, looked up on first use). ``close`` cancels pending timers
    (frames still held are dropped) and closes the wrapped NIC.
    """

    def __init__(
        self,
        inner: Nic,
        config: FaultConfig | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # No super().__init__(): the wrapped NIC's stats object and MTU are this one's.
        self.inner = inner
        self.stats = inner.stats
        self.mtu = inner.mtu
        self.config = config or FaultConfig()
        self._loop = loop
        self._rng = random.Random(self.config.seed)
        self.fault_stats = _fault_counters()
        # Frames held back (delay, jitter, reorder): a heap of (due, arrival number,
        # frame) behind one timer, so frames due at the same time leave in the order they
        # came (asyncio's timer heap does not keep that order for equal times).
        self._held: list[tuple[float, int, bytes]] = []
        self._held_count = 0
        self._held_timer: asyncio.TimerHandle | None = None
        self._held_timer_at = 0.0
        self._closed = False
        cfg = self.config
        self._tx = cfg.direction in ("tx", "both")
        self._rx = cfg.direction in ("rx", "both")
        # Token bucket (bytes) for the rate limiter.
        self._rate_Bps = cfg.rate_bps / 8.0 if cfg.rate_bps else 0.0
        self._bucket_size = float(cfg.rate_burst or (inner.mtu + ETH_HEADER_LEN))
        self._tokens = self._bucket_size
        self._tokens_at: float | None = None
        self._rate_queue: deque[bytes] = deque()
        self._rate_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"FaultyNic({self.inner!r}, {self.config!r})"

    # -- delegation --------------------------------------------------------------------

    @property
    def vnet_hdr(self) -> bool:
        """Frames of the wrapped NIC carry a virtio-net header (a TAP with offloads)."""
        return bool(getattr(self.inner, "vnet_hdr", False))

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def rate_queue_len(self) -> int:
        """Frames waiting in the rate limiter's queue (never above ``queue_limit``)."""
        return len(self._rate_queue)

    @property
    def pending_timers(self) -> int:
        """Frames held back by reorder/delay (plus the rate limiter's timer)."""
        return len(self._held) + (self._rate_timer is not None)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _call_later(self, delay: float, frame: bytes) -> None:
        """Send ``frame`` after ``delay`` seconds (after frames due earlier or at once)."""
        loop = self._get_loop()
        heapq.heappush(self._held, (loop.time() + delay, self._held_count, frame))
        self._held_count += 1
        self._arm_held(loop)

    def _arm_held(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._held:
            return
        due = self._held[0][0]
        if self._held_timer is not None:
            if self._held_timer_at <= due:
                return
            self._held_timer.cancel()
        self._held_timer_at = due
        self._held_timer = loop.call_at(due, self._release_held)

    def _release_held(self) -> None:
        self._held_timer = None
        if self._closed:
            return
        loop = self._get_loop()
        # Everything due by the time this timer was set for (the loop may run it a clock
        # tick early).
        limit = max(loop.time(), self._held_timer_at)
        held = self._held
        while held and held[0][0] <= limit:
            self.inner.send((heapq.heappop(held)[2],))
        self._arm_held(loop)

    def link_down(self) -> bool:
        """True while a link flap holds the link down (see ``FaultConfig.flap_every``)."""
        every = self.config.flap_every
        if not every or not self.config.flap_down:
            return False
        return self._get_loop().time() % every >= every - self.config.flap_down

    def _is_arp(self, parts: Sequence[Buffer]) -> bool:
        """ARP carries no checksum: only the link's FCS guards it, and no real link lets a
        damaged frame through it. Corrupting ARP would poison neighbour caches (for a whole
        entry lifetime) in a way no wire does, so corruption spares ARP frames."""
        off = ETH_HEADER_LEN - 2 + (_VNET_HDR_LEN if self.vnet_hdr else 0)
        head = parts[0]
        if len(parts) > 1 and len(head) < off + 2:
            head = b"".join(parts)[: off + 2]
        return bytes(head[off : off + 2]) == b"\x08\x06"

    def _corrupted(self, frame: Buffer) -> bytes:
        """A copy of ``frame`` with one byte past the Ethernet header flipped.

        The frame still reaches the IP/TCP layers, where a checksum must catch it. Behind a
        virtio-net header the header's checksum flags are cleared too, so the stack checks
        the checksum instead of trusting the kernel's verdict on the undamaged frame.
        """
        buf = bytearray(frame)
        start = ETH_HEADER_LEN
        if self.vnet_hdr:
            start += _VNET_HDR_LEN
            if buf:
                buf[0] = 0  # flags: neither NEEDS_CSUM nor DATA_VALID
        if len(buf) > start:
            i = self._rng.randrange(start, len(buf))
            buf[i] ^= self._rng.randrange(1, 256)
        return bytes(buf)

    def _ce_marked(self, frame: bytes) -> bytes | None:
        """``frame`` with its IP ECN field set to CE, if it was ECT; else None.

        What a router does to the IP header (RFC 3168 (5)): the two low bits of the IPv4
        TOS byte become 11 and the header checksum is updated incrementally (RFC 1624
        (3)); IPv6 has them in the traffic class (bits 4-5 of its second byte) and no
        header checksum.
        """
        off = ETH_HEADER_LEN + (_VNET_HDR_LEN if self.vnet_hdr else 0)
        if len(frame) >= off + 40 and frame[off - 2 : off] == b"\x86\xdd":
            if (frame[off + 1] >> 4) & 3 in (0, 3):
                return None
            buf = bytearray(frame)
            buf[off + 1] |= 0x30
            return bytes(buf)
        if len(frame) < off + 20 or frame[off - 2 : off] != b"\x08\x00":
            return None
        tos = frame[off + 1]
        if tos & 3 == 0 or tos & 3 == 3:
            return None  # Not-ECT is never marked; CE stays CE
        buf = bytearray(frame)
        old = (buf[off] << 8) | tos
        new = old | 3
        buf[off + 1] = tos | 3
        csum = (buf[off + 10] << 8) | buf[off + 11]
        # RFC 1624 (3): HC' = ~(~HC + ~m + m')
        s = (~csum & 0xFFFF) + (~old & 0xFFFF) + new
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        csum = ~s & 0xFFFF
        buf[off + 10] = csum >> 8
        buf[off + 11] = csum & 0xFF
        return bytes(buf)

    # -- transmit ----------------------------------------------------------------------

    def send(self, parts: Sequence[Buffer]) -> None:
        if self._closed:
            self.inner.stats.tx_dropped += 1
            return
        if not self._tx:
            self.inner.send(parts)
            return
        cfg, rng, fs = self.config, self._rng, self.fault_stats
        if cfg.flap_every and self.link_down():
            fs["flap_dropped"] += 1
            return
        if cfg.loss and rng.random() < cfg.loss:
            fs["dropped"] += 1
            return
        frame: Buffer | None = None  # the frame as one buffer once we had to copy it
        if cfg.ce_mark and rng.random() < cfg.ce_mark:
            marked = self._ce_marked(b"".join(parts))
            if marked is not None:
                fs["ce_marked"] += 1
                frame = marked
                parts = (marked,)
        if cfg.corrupt and rng.random() < cfg.corrupt and not self._is_arp(parts):
            fs["corrupted"] += 1
            if self.vnet_hdr:
                # With checksum offload the kernel checksums the frame after us and would
                # certify the damage: a damaged frame is one the receiver drops, so drop it.
                return
            frame = self._corrupted(b"".join(parts))
        copies = 1
        if cfg.duplicate and rng.random() < cfg.duplicate:
            copies = 2
            fs["duplicated"] += 1
        for _ in range(copies):
            if self._rate_Bps:
                if frame is None:
                    frame = b"".join(parts)
                self._rate_limit(bytes(frame))
            else:
                self._shape(parts if frame is None else (frame,))

    def _shape(self, parts: Sequence[Buffer]) -> None:
        """Last stage: hold back for reordering, delay, or send now."""
        cfg, rng, fs = self.config, self._rng, self.fault_stats
        if cfg.reorder and rng.random() < cfg.reorder:
            fs["reordered"] += 1
            self._call_later(cfg.reorder_delay, b"".join(parts))
            return
        if cfg.delay or cfg.jitter:
            d = cfg.delay
            if cfg.jitter:
                d = max(0.0, d + rng.uniform(-cfg.jitter, cfg.jitter))
            fs["delayed"] += 1
            # Copy: the caller may reuse its buffers once send() returns.
            self._call_later(d, b"".join(parts))
            return
        self.inner.send(parts)

    def _refill(self, now: float) -> None:
        if self._tokens_at is not None:
            self._tokens = min(
                self._bucket_size, self._tokens + (now - self._tokens_at) * self._rate_Bps
            )
        self._tokens_at = now

    def _rate_limit(self, frame: bytes) -> None:
        """Token bucket: send if the bucket holds the frame's bytes, else queue (bounded)."""
        self._refill(self._get_loop().time())
        # A frame larger than the bucket may go once the bucket is full (tokens go negative).
        need = min(len(frame), self._bucket_size)
        if not self._rate_queue and self._tokens >= need:
            self._tokens -= len(frame)
            self._shape((frame,))
            return
        if len(self._rate_queue) >= self.config.queue_limit:
            self.fault_stats["rate_dropped"] += 1
            return
        self._rate_queue.append(frame)
        self._arm_rate_timer()

    def _arm_rate_timer(self) -> None:
        if self._rate_timer is not None or not self._rate_queue:
            return
        need = min(len(self._rate_queue[0]), self._bucket_size)
        # At least 1 us: a wait below the clock's float resolution (loop.time() is large)
        # would not move the clock, so the bucket would never refill: a busy loop.
        wait = max(1e-6, (need - self._tokens) / self._rate_Bps)
        self._rate_timer = self._get_loop().call_later(wait, self._drain_rate_queue)

    def _drain_rate_queue(self) -> None:
        self._rate_timer = None
        if self._closed:
            return
        self._refill(self._get_loop().time())
        q = self._rate_queue
        while q:
            need = min(len(q[0]), self._bucket_size)
            if self._tokens < need:
                break
            frame = q.popleft()
            self._tokens -= len(frame)
            self._shape((frame,))
        self._arm_rate_timer()

    # -- receive -----------------------------------------------------------------------

    def recv_batch(self, max_frames: int = 64) -> list[bytes]:
        """Frames from the wrapped NIC after receive-side faults.

        With ``duplicate`` > 0 the batch may hold more than ``max_frames`` frames (the
        duplicates arrive together with their originals, as on a wire).
        """
        frames = self.inner.recv_batch(max_frames)
        if not self._rx or not frames or self._closed:
            return frames
        cfg, rng, fs = self.config, self._rng, self.fault_stats
        if not (cfg.loss or cfg.corrupt or cfg.duplicate or cfg.reorder):
            return frames
        out: list[bytes] = []
        held: bytes | None = None
        for frame in frames:
            if cfg.loss and rng.random() < cfg.loss:
                fs["dropped"] += 1
                continue
            if cfg.corrupt and rng.random() < cfg.corrupt and not self._is_arp((frame,)):
                frame = self._corrupted(frame)
                fs["corrupted"] += 1
            dup = bool(cfg.duplicate) and rng.random() < cfg.duplicate
            if dup:
                fs["duplicated"] += 1
            if held is None and cfg.reorder and rng.random() < cfg.reorder:
                held = frame  # overtaken by the next frame of this batch
                if dup:
                    out.append(frame)
                continue
            out.append(frame)
            if dup:
                out.append(frame)
            if held is not None:
                out.append(held)
                fs["reordered"] += 1
                held = None
        if held is not None:
            out.append(held)  # nothing followed: deliver in order rather than hold it
        return out

    # -- shutdown ----------------------------------------------------------------------

    def close(self) -> None:
        """Cancel pending timers (held frames are lost) and close the wrapped NIC."""
        if self._closed:
            return
        self._closed = True
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        self._held.clear()
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None
        self._rate_queue.clear()
        self.inner.close()
