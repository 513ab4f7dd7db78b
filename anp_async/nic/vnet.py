"""The virtio-net header a TAP opened with ``IFF_VNET_HDR`` puts in front of every frame.

With the header the kernel and the stack share the work a real NIC's offloads do
(``ethtool -k``): the kernel may hand over one TCP frame of up to 64 KiB that it never cut
into MSS-sized segments (GSO/TSO) and whose TCP checksum it never finished
(``NEEDS_CSUM``), and it accepts the same from us: a "super-segment" it cuts to
``gso_size`` and whose checksum it completes. The layout is ``struct virtio_net_hdr_v1``
(virtio spec 5.1.6, ``<linux/virtio_net.h>``), 12 bytes, little-endian on the hosts this
runs on (a legacy TAP uses the host's byte order)::

    u8 flags  u8 gso_type  u16 hdr_len  u16 gso_size  u16 csum_start  u16 csum_offset
    u16 num_buffers

A frame without offload carries 12 zero bytes (:data:`PLAIN_HEADER`). The stack only
ever builds headers (the two below) and reads two bytes of a received one (flags and
gso_type, in :mod:`.offload`); ``tests/unit/vnet_reference.py`` decodes whole headers.
"""

from __future__ import annotations

import struct

__all__ = [
    "VNET_HDR_LEN",
    "F_NEEDS_CSUM",
    "F_DATA_VALID",
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_UDP",
    "GSO_TCPV6",
    "GSO_ECN",
    "PLAIN_HEADER",
    "build_tcp4_csum_header",
    "build_tcp4_gso_header",
]

VNET_HDR_LEN = 12

# flags (virtio spec 5.1.6.2)
F_NEEDS_CSUM = 0x01  # checksum from csum_start to the end is still to be done
F_DATA_VALID = 0x02  # the checksum was already verified

# gso_type
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_ECN = 0x80  # flag on gso_type: the segments carry ECN CWR

_HDR = struct.Struct("<BBHHHHH")

ETH_LEN = 14
IPV4_LEN = 20  # the stack never sends IP options
IPV6_LEN = 40  # nor IPv6 extension headers with TCP
TCP_CSUM_OFFSET = 16  # offset of the checksum field inside the TCP header

#: The header of a frame that needs nothing done: no GSO, checksums complete.
PLAIN_HEADER = bytes(VNET_HDR_LEN)


#: An Ethernet + IPv4 (no options) + TCP frame whose TCP checksum the kernel completes.
_TCP4_CSUM = _HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, ETH_LEN + IPV4_LEN, TCP_CSUM_OFFSET, 0)


def build_tcp4_csum_header() -> bytes:
    """Header for one TCP/IPv4 segment with a partial checksum (the pseudo-header sum in
    the checksum field): the kernel sums from the TCP header to the end and stores it."""
    return _TCP4_CSUM


_TCP6_CSUM = _HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, ETH_LEN + IPV6_LEN, TCP_CSUM_OFFSET, 0)


def build_tcp6_csum_header() -> bytes:
    """As :func:`build_tcp4_csum_header`, for TCP over IPv6 (no extension headers)."""
    return _TCP6_CSUM


def build_tcp6_gso_header(tcp_header_len: int, gso_size: int) -> bytes:
    """As :func:`build_tcp4_gso_header`, for a TCP/IPv6 super-segment (TSO6)."""
    return _HDR.pack(
        F_NEEDS_CSUM,
        GSO_TCPV6,
        ETH_LEN + IPV6_LEN + tcp_header_len,
        gso_size,
        ETH_LEN + IPV6_LEN,
        TCP_CSUM_OFFSET,
        0,
    )


def build_tcp4_gso_header(tcp_header_len: int, gso_size: int) -> bytes:
    """Header for a TCP/IPv4 super-segment that the kernel cuts into ``gso_size``-byte
    segments, each with a copy of the headers (``hdr_len`` = Ethernet + IPv4 + TCP) and
    its own checksum. The payload must be larger than ``gso_size`` (the kernel refuses
    a GSO frame that would make a single segment)."""
    return _HDR.pack(
        F_NEEDS_CSUM,
        GSO_TCPV4,
        ETH_LEN + IPV4_LEN + tcp_header_len,
        gso_size,
        ETH_LEN + IPV4_LEN,
        TCP_CSUM_OFFSET,
        0,
    )
