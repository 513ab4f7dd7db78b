"""The sender's SACK scoreboard and the RFC 6675 loss-recovery queries built on it.

Sequence numbers are the connection's unbounded absolute numbers (0 = our SYN), so the
scoreboard never deals with wrap-around. It holds the ranges the receiver reported with
SACK blocks (RFC 2018) above SND.UNA, sorted and merged. Everything RFC 6675 asks of it is
answered per *hole* (an unSACKed gap below the highest SACKed byte): every byte of a hole has
the same SACKed data above it, so IsLost() is the same for the whole hole.

Bounded: at most ``max_blocks`` ranges; past that the highest range is forgotten (which can
only make the sender retransmit a little more, never less).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

__all__ = ["DUP_THRESH", "SackScoreboard"]

# RFC 6675 (2): DupThresh, the number of duplicate ACKs (or SACKed segments) that mark a loss.
DUP_THRESH = 3


class SackScoreboard:
    """SACKed ranges above SND.UNA, plus the RFC 6675 IsLost / SetPipe / NextSeg queries."""

    __slots__ = ("max_blocks", "blocks", "sacked", "invalid", "dsack")

    def __init__(self, max_blocks: int = 128) -> None:
        self.max_blocks = max_blocks
        self.blocks: list[tuple[int, int]] = []  # sorted, disjoint, non-adjacent [start, end)
        self.sacked = 0  # bytes held in ``blocks``
        self.invalid = 0  # blocks ignored: outside SND.UNA..SND.MAX or malformed
        self.dsack = 0  # RFC 2883 D-SACK blocks (at or below SND.UNA): tolerated, ignored

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def high(self) -> int:
        """End of the highest SACKed range (HighSACK + 1); 0 when empty."""
        return self.blocks[-1][1] if self.blocks else 0

    def clear(self) -> None:
        """Forget everything (RFC 2018 (8): the receiver may renege)."""
        self.blocks.clear()
        self.sacked = 0

    def advance(self, snd_una: int) -> None:
        """The cumulative ACK moved to ``snd_una``: drop what lies below it."""
        blocks = self.blocks
        while blocks and blocks[0][0] < snd_una:
            a, b = blocks[0]
            if b <= snd_una:
                blocks.pop(0)
                self.sacked -= b - a
            else:
                blocks[0] = (snd_una, b)
                self.sacked -= snd_una - a
                break

    def update(self, ranges: Iterable[tuple[int, int]], snd_una: int, snd_max: int) -> int:
        """Add the receiver's SACK blocks (absolute numbers); return the newly SACKed bytes.

        RFC 2018 (4) / RFC 2883: a block at or below SND.UNA is a D-SACK (a duplicate report):
        tolerated and ignored. A block reaching beyond SND.MAX, or with start >= end, cannot
        describe data we sent: ignored and counted (RFC 5961 (5) spirit: never trust it).
        """
        new = 0
        for a, b in ranges:
            if b <= snd_una:
                self.dsack += 1
                continue
            if a >= b or b > snd_max or a < snd_una - 0x40000000:
                self.invalid += 1
                continue
            if a < snd_una:
                # RFC 2883 (4.1.2): a D-SACK block may straddle SND.UNA; keep the new part.
                self.dsack += 1
                a = snd_una
            new += self._insert(a, b)
        return new

    def _insert(self, a: int, b: int) -> int:
        blocks = self.blocks
        i = bisect_right(blocks, (a, b))
        # Merge with the neighbour on the left when it overlaps or touches.
        if i > 0 and blocks[i - 1][1] >= a:
            i -= 1
        j = i
        covered = 0
        lo, hi = a, b
        while j < len(blocks) and blocks[j][0] <= hi:
            s, e = blocks[j]
            ov = min(e, b) - max(s, a)
            if ov > 0:
                covered += ov
            lo = min(lo, s)
            hi = max(hi, e)
            self.sacked -= e - s
            j += 1
        blocks[i:j] = [(lo, hi)]
        self.sacked += hi - lo
        while len(blocks) > self.max_blocks:
            s, e = blocks.pop()
            self.sacked -= e - s
        return (b - a) - covered

    def sacked_end(self, seq: int) -> int | None:
        """If ``seq`` is SACKed, the end of its range; else None."""
        blocks = self.blocks
        i = bisect_right(blocks, (seq, 1 << 62)) - 1
        if i >= 0 and blocks[i][0] <= seq < blocks[i][1]:
            return blocks[i][1]
        return None

    def next_sacked_start(self, seq: int) -> int | None:
        """Start of the first SACKed range beginning after ``seq``; None if there is none."""
        blocks = self.blocks
        i = bisect_right(blocks, (seq, 1 << 62))
        return blocks[i][0] if i < len(blocks) else None

    def holes(self, snd_una: int, mss: int) -> list[tuple[int, int, bool]]:
        """The unSACKed gaps below the highest SACKed byte: (start, end, lost).

        RFC 6675 (4) IsLost(): a byte is lost once DupThresh discontiguous SACKed ranges, or
        more than (DupThresh - 1) * SMSS SACKed bytes, lie above it.
        """
        out: list[tuple[int, int, bool]] = []
        blocks = self.blocks
        n = len(blocks)
        above = self.sacked
        limit = (DUP_THRESH - 1) * mss
        cur = snd_una
        for i in range(n):
            a, b = blocks[i]
            if a > cur:
                out.append((cur, a, (n - i) >= DUP_THRESH or above > limit))
            above -= b - a
            if b > cur:
                cur = b
        return out

    def is_lost(self, seq: int, snd_una: int, mss: int) -> bool:
        """RFC 6675 (4) IsLost(SeqNum)."""
        for a, b, lost in self.holes(snd_una, mss):
            if a <= seq < b:
                return lost
        return False

    def pipe(self, snd_una: int, snd_max: int, high_rxt: int, mss: int) -> int:
        """RFC 6675 (4) SetPipe(): octets presumed in the network.

        Every unSACKed octet in SND.UNA..SND.MAX counts once unless it is lost, and once more
        if it was retransmitted (below HighRxt).
        """
        pipe = 0
        cur = snd_una
        for a, b, lost in self.holes(snd_una, mss):
            if not lost:
                pipe += b - a
            if high_rxt > a:
                pipe += (high_rxt if high_rxt < b else b) - a
            cur = b
        top = self.high
        if top > cur:
            cur = top
        if snd_max > cur:
            pipe += snd_max - cur
            if high_rxt > cur:
                pipe += (high_rxt if high_rxt < snd_max else snd_max) - cur
        return pipe

    def next_seg(self, high_rxt: int, snd_una: int, mss: int) -> tuple[int, int, bool] | None:
        """RFC 6675 (4) NextSeg() rules (1) and (3): the next unSACKed range to retransmit.

        Returns (start, end, lost) for the first hole part at or above HighRxt, at most one
        SMSS long: ``lost`` True is rule (1); False is a rule (3) candidate, which the caller
        uses only when no new data can be sent.
        """
        start = high_rxt if high_rxt > snd_una else snd_una
        for a, b, lost in self.holes(snd_una, mss):
            if b <= start:
                continue
            s = a if a > start else start
            e = s + mss
            return s, (e if e < b else b), lost
        return None
