"""Offload decisions for a NIC with the virtio-net header (what ``ethtool -k`` shows).

With ``IFF_VNET_HDR`` the kernel on the other side of the TAP does work a real NIC's
offloads would: it verifies or skips receive checksums (rx-checksumming), hands over
GRO'd super-segments, completes the TCP checksum we leave partial (tx-checksumming) and
cuts a TCP super-segment of up to 64 KiB at the MSS (TSO). :class:`VnetOffload` makes
those decisions for one NIC, frame by frame, and counts them; the stack asks it instead
of knowing the header's layout. A NIC without the header gets ``enabled=False``: no
header, no offloads.
"""

from __future__ import annotations

from ..counters import Counters
from .vnet import (
    F_DATA_VALID,
    F_NEEDS_CSUM,
    PLAIN_HEADER,
    VNET_HDR_LEN,
    build_tcp4_csum_header,
    build_tcp4_gso_header,
    build_tcp6_csum_header,
    build_tcp6_gso_header,
)

#: Largest TCP payload of one super-segment with TSO: the IPv4 total length is 16 bits,
#: less the IP header and the largest TCP header.
TSO_MAX_PAYLOAD = 65535 - 20 - 60

# Flags of a received frame whose transport checksum need not be verified: partial (the
# data never left the host) or already checked by the kernel.
_CSUM_TRUSTED = F_NEEDS_CSUM | F_DATA_VALID

#: Bound on the cache of GSO headers (one per TCP header length and segment size).
_GSO_CACHE_MAX = 256


class VnetOffload:
    """The offload decisions of one NIC (``enabled``: it carries the virtio-net header)."""

    __slots__ = ("enabled", "counters", "_csum", "_csum6", "_gso")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.counters = Counters()
        #: The header of a TCP segment whose checksum the kernel completes.
        self._csum = build_tcp4_csum_header()
        self._csum6 = build_tcp6_csum_header()
        self._gso: dict[tuple[int, int, bool], bytes] = {}

    @property
    def tso_max(self) -> int:
        """The largest TCP payload to hand the NIC in one frame (0: no TSO)."""
        return TSO_MAX_PAYLOAD if self.enabled else 0

    # ---------------------------------------------------------------- receive

    def rx_csum_trusted(self, frame: bytes | memoryview) -> bool | None:
        """For a received frame (header included): may its transport checksum go
        unverified? None when the frame is too short to carry the header (counted)."""
        if len(frame) < VNET_HDR_LEN:
            self.counters.inc("vnet_truncated")
            return None
        if frame[1]:  # gso_type: one frame carrying many segments' worth (GRO-like)
            self.counters.inc("gso_frames_received")
        return bool(frame[0] & _CSUM_TRUSTED)

    # --------------------------------------------------------------- transmit

    def tcp_header(
        self, tcp_header_len: int, payload_len: int, mss: int, v6: bool = False
    ) -> tuple[bytes, bool]:
        """The virtio-net header for a TCP segment (over IPv4, or IPv6 with ``v6``) whose
        checksum is left partial, and whether the kernel is to cut it (TSO, TSO6).
        ``mss`` is the connection's (0: never cut)."""
        if mss:
            # RFC 6691: the MSS counts data behind a 20-byte header; options take their
            # bytes out of it, so each cut segment fits the peer's MSS.
            gso_size = mss + 20 - tcp_header_len
            if payload_len > gso_size:
                return self._gso_header(tcp_header_len, gso_size, v6), True
        return (self._csum6 if v6 else self._csum), False

    def _gso_header(self, tcp_header_len: int, gso_size: int, v6: bool = False) -> bytes:
        key = (tcp_header_len, gso_size, v6)
        vnet = self._gso.get(key)
        if vnet is None:
            build = build_tcp6_gso_header if v6 else build_tcp4_gso_header
            vnet = build(tcp_header_len, gso_size)
            if len(self._gso) < _GSO_CACHE_MAX:
                self._gso[key] = vnet
        return vnet

    @staticmethod
    def plain_header() -> bytes:
        """The header of a frame that needs nothing done."""
        return PLAIN_HEADER

    def stats(self) -> dict[str, int | bool]:
        """``stats()["offload"]``: whether the header is on, and the counters."""
        return {"vnet_hdr": self.enabled, **self.counters}
