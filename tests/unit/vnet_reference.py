"""A reference decoder of the virtio-net header, for the tests: production never parses a
whole header (the receive path reads two bytes of it, see ``anp_async/nic/offload.py``), so
this lives beside the tests that read the builders' output with it."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from anp_async.nic.vnet import F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, VNET_HDR_LEN
from anp_async.proto.errors import ParseError

_HDR = struct.Struct("<BBHHHHH")


@dataclass(slots=True, frozen=True)
class VnetHeader:
    """One parsed virtio-net header."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & F_NEEDS_CSUM)

    @property
    def csum_trusted(self) -> bool:
        """The transport checksum need not be verified: partial (the data never left the
        host) or already checked by the kernel."""
        return bool(self.flags & (F_NEEDS_CSUM | F_DATA_VALID))

    @property
    def is_gso(self) -> bool:
        return (self.gso_type & ~GSO_ECN) != GSO_NONE


def parse_vnet_header(frame: bytes | bytearray | memoryview) -> VnetHeader:
    """The header at the start of ``frame``; ParseError('vnet_truncated') if it is short."""
    if len(frame) < VNET_HDR_LEN:
        raise ParseError("vnet_truncated", f"{len(frame)} bytes")
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, _ = _HDR.unpack_from(frame)
    return VnetHeader(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def build_vnet_header(h: VnetHeader) -> bytes:
    """The 12 bytes of ``h`` (num_buffers is 0: only meaningful with mergeable buffers)."""
    return _HDR.pack(
        h.flags & 0xFF,
        h.gso_type & 0xFF,
        h.hdr_len & 0xFFFF,
        h.gso_size & 0xFFFF,
        h.csum_start & 0xFFFF,
        h.csum_offset & 0xFFFF,
        0,
    )


