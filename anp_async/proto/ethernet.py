"""Ethernet II framing (IEEE 802.3 with DIX EtherType) and MAC address helpers.

Only the header is handled here: the NIC delivers frames without preamble or FCS. A
VLAN-tagged frame (802.1Q, EtherType 0x8100) is returned with that EtherType, which the
stack counts as unknown; so is an 802.3 length field (values below 0x0600).
"""

from __future__ import annotations

import struct

from anp_async.proto.checksum import Buffer
from anp_async.proto.errors import ParseError

# The EtherTypes live in numbers.py; re-exported here, where readers look for them.
from anp_async.proto.numbers import ETH_P_8021Q as ETH_P_8021Q
from anp_async.proto.numbers import ETH_P_ARP as ETH_P_ARP
from anp_async.proto.numbers import ETH_P_IP as ETH_P_IP
from anp_async.proto.numbers import ETH_P_IPV6 as ETH_P_IPV6

HEADER_LEN = 14
MIN_FRAME_LEN = 60  # without FCS; shorter frames are padded by the sender (IEEE 802.3)
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

_HEADER = struct.Struct("!6s6sH")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack
_HEX = frozenset("0123456789abcdefABCDEF")


def parse_ethernet(frame: Buffer) -> tuple[bytes, bytes, int, memoryview]:
    """Split a frame into ``(dst_mac, src_mac, ethertype, payload)``.

    The payload is a view into ``frame`` (no copy). It may include the sender's padding
    to the minimum frame size; the network layer trims it with its own length field.
    Raises ``ParseError('eth_truncated')`` for a frame shorter than the header.
    """
    if len(frame) < HEADER_LEN:
        raise ParseError("eth_truncated", f"{len(frame)} bytes")
    dst, src, ethertype = _unpack_header(frame)
    view = frame if type(frame) is memoryview else memoryview(frame)
    return dst, src, ethertype, view[HEADER_LEN:]


def build_ethernet_header(dst: bytes, src: bytes, ethertype: int) -> bytes:
    """The 14-byte header for a frame to ``dst`` from ``src`` carrying ``ethertype``."""
    return _pack_header(dst, src, ethertype)


def is_multicast_mac(mac: bytes) -> bool:
    """True for group addresses (broadcast included): the I/G bit of the first octet."""
    return bool(mac[0] & 1)


def mac_to_bytes(mac: str | bytes) -> bytes:
    """``"02:00:00:aa:bb:cc"`` (``:`` or ``-`` separated) to 6 bytes; bytes pass through."""
    if isinstance(mac, bytes | bytearray):
        if len(mac) != 6:
            raise ValueError(f"MAC address must be 6 bytes, got {len(mac)}")
        return bytes(mac)
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 and _HEX.issuperset(p) for p in parts):
        raise ValueError(f"invalid MAC address {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_to_str(mac: Buffer) -> str:
    """6 bytes to the usual lower-case ``aa:bb:cc:dd:ee:ff`` form."""
    return bytes(mac).hex(":")
