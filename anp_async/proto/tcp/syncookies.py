"""SYN cookies (RFC 4987 (3.6)): answer a SYN without keeping any state.

When a listener's SYN queue is full the stack still answers each SYN with a SYN-ACK, but
remembers nothing: the SYN-ACK's initial sequence number (the *cookie*) carries what is
needed to rebuild the connection when the ACK of the handshake comes back, and a keyed MAC
proves that we issued it. Layout of the 32-bit cookie (our own, not Linux's)::

    bits 31..27  counter: minutes-ish time slot (``now // SLOT``) modulo 32
    bits 26..2   25-bit MAC over (secret, 4-tuple, peer ISN, full counter, MSS index)
    bits  1..0   index into MSS_TABLE of the largest entry <= the peer's MSS

A cookie is valid for ``MAX_AGE_SLOTS`` slots (two: 64 to 128 s, like Linux). Forging one
blindly succeeds with probability 2**-25 per try.

Options: the ISN has no room for window scale and SACK-permitted, so, as Linux does, they
are encoded in the low 6 bits of our TSval in the SYN-ACK when the peer offered timestamps
(its ACK echoes the TSval back in TSecr). Without timestamps the connection is rebuilt with
MSS only (no window scaling, no SACK): the documented RFC 4987 trade-off.

Sans-I/O: time is the ``now`` passed in; the secret comes from the caller.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["MSS_TABLE", "SynCookies", "decode_ts_options", "encode_ts_options"]

#: MSS values a cookie can carry (2 bits); 536 is RFC 9293's default, 1460 Ethernet's.
MSS_TABLE = (536, 1220, 1440, 1460)
SLOT = 64.0  # seconds per counter step
MAX_AGE_SLOTS = 2
_MAC_BITS = 25
_MAC_MASK = (1 << _MAC_BITS) - 1
TS_OPT_BITS = 6
TS_OPT_MASK = (1 << TS_OPT_BITS) - 1
_NO_WSCALE = 0xF
_PACK = struct.Struct("!4s4sHHII")


def encode_ts_options(tsval: int, wscale: int | None, sack: bool) -> int:
    """Our SYN-ACK TSval with (peer's wscale, SACK-permitted) in its low 6 bits.

    The result is never above ``tsval`` (one 64 ms step back if needed), so later segments
    of the connection, stamped from the same clock, never look older to the peer's PAWS.
    """
    ws = _NO_WSCALE if wscale is None else min(wscale, 14)
    bits = (ws << 1) | (1 if sack else 0)
    ts = (tsval & ~TS_OPT_MASK & 0xFFFFFFFF) | bits
    if ts > tsval:
        ts = (ts - (TS_OPT_MASK + 1)) & 0xFFFFFFFF
    return ts


def decode_ts_options(tsecr: int) -> tuple[int | None, bool]:
    """(peer wscale or None, SACK-permitted) from the TSecr of the handshake's ACK."""
    ws = (tsecr >> 1) & 0xF
    return (None if ws == _NO_WSCALE else ws), bool(tsecr & 1)


class SynCookies:
    """Issue and check SYN cookies with one secret (see module docstring)."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the SYN cookie secret must have at least 16 bytes")
        self._key = hashlib.blake2s(secret, digest_size=32).digest()

    def _mac(
        self,
        saddr: bytes,
        sport: int,
        daddr: bytes,
        dport: int,
        peer_isn: int,
        counter: int,
        mss_idx: int,
    ) -> int:
        msg = _PACK.pack(saddr, daddr, sport, dport, peer_isn & 0xFFFFFFFF, counter & 0xFFFFFFFF)
        h = hashlib.blake2s(msg + bytes([mss_idx]), key=self._key, digest_size=4).digest()
        return int.from_bytes(h, "big") & _MAC_MASK

    @staticmethod
    def mss_index(mss: int) -> int:
        """The largest MSS_TABLE entry not above the peer's MSS (RFC 4987: a few values)."""
        idx = 0
        for i, m in enumerate(MSS_TABLE):
            if m <= mss:
                idx = i
        return idx

    def make(
        self,
        saddr: bytes,
        sport: int,
        daddr: bytes,
        dport: int,
        peer_isn: int,
        peer_mss: int,
        now: float,
    ) -> tuple[int, int]:
        """(cookie ISN, MSS it encodes) for a SYN from saddr:sport to daddr:dport."""
        counter = int(now // SLOT)
        idx = self.mss_index(peer_mss)
        mac = self._mac(saddr, sport, daddr, dport, peer_isn, counter, idx)
        return ((counter & 0x1F) << 27) | (mac << 2) | idx, MSS_TABLE[idx]

    def check(
        self,
        saddr: bytes,
        sport: int,
        daddr: bytes,
        dport: int,
        peer_isn: int,
        cookie: int,
        now: float,
    ) -> int | None:
        """The MSS of a valid, unexpired cookie (our ISN = SEG.ACK - 1); None if invalid."""
        cookie &= 0xFFFFFFFF
        slot5 = cookie >> 27
        idx = cookie & 3
        mac = (cookie >> 2) & _MAC_MASK
        current = int(now // SLOT)
        for age in range(MAX_AGE_SLOTS):
            counter = current - age
            if counter & 0x1F != slot5:
                continue
            if self._mac(saddr, sport, daddr, dport, peer_isn, counter, idx) == mac:
                return MSS_TABLE[idx]
        return None
