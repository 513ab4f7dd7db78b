"""The Internet checksum (RFC 1071) at C speed.

The 16-bit ones' complement sum of a buffer equals the buffer read as one big-endian
integer, taken modulo 0xffff, because 2**16 is 1 modulo 0xffff (RFC 1071 (2): the sum is
independent of how words are grouped). ``int.from_bytes`` and the modulo run in C, so no
Python loop touches the bytes. The only care needed is the end-around case: in ones'
complement arithmetic a non-zero sum never folds to 0, it folds to 0xffff ("negative
zero"); only an all-zero buffer sums to 0.

The modulo of a big integer is the slow part (one hardware division per 30 bits), so
buffers of 2 KiB and more are summed with numpy when it is installed; it is optional.
"""

from __future__ import annotations

from collections.abc import Callable

Buffer = bytes | bytearray | memoryview

_FROM_BYTES = int.from_bytes


def fold(value: int) -> int:
    """Fold a non-negative integer sum of 16-bit words into 16 bits (end-around carry).

    Result is in [1, 0xffff] for any non-zero ``value`` and 0 only for ``value == 0``,
    exactly what repeated end-around-carry addition gives.
    """
    if not value:
        return 0
    return value % 0xFFFF or 0xFFFF


def _int_ones_sum(data: Buffer) -> int:
    """The pure-CPython sum: one big integer, one modulo."""
    value = _FROM_BYTES(data, "big")
    if len(data) & 1:
        value <<= 8
    if not value:
        return 0
    return value % 0xFFFF or 0xFFFF


def _load_vector_sum() -> Callable[[Buffer], int] | None:
    """numpy's vectorised sum if numpy is installed (an optional speed-up), else None."""
    try:
        import numpy
    except ImportError:
        return None
    frombuffer = numpy.frombuffer
    uint64 = numpy.uint64

    def vector_sum(data: Buffer) -> int:
        n = len(data)
        whole = n & ~3
        # 32-bit words in machine order summed into 64 bits: 2**16 is 1 modulo 0xffff,
        # so this is the sum of 16-bit words; little-endian words give the byte-swapped
        # sum (RFC 1071 (2)), swapped back below
        value = int(frombuffer(data, dtype="<u4", count=whole >> 2).sum(dtype=uint64))
        s = fold(value)
        total = ((s & 0xFF) << 8) | (s >> 8)
        if whole != n:
            tail = _FROM_BYTES(memoryview(data)[whole:], "big")
            total += tail << 8 if n & 1 else tail
        return fold(total)

    return vector_sum


_vector_sum: Callable[[Buffer], int] | None = None
_vector_loaded = False
VECTOR_MIN_LEN = 2048  # below this the big-integer sum is as fast as numpy's call overhead


def ones_sum(data: Buffer) -> int:
    """16-bit ones' complement sum of ``data`` (folded, not inverted).

    An odd trailing byte is padded with a zero byte on the right (RFC 1071 (1)). Large
    buffers use numpy when it is installed (about 10x faster at 64 KiB).
    """
    if len(data) >= VECTOR_MIN_LEN:
        global _vector_sum, _vector_loaded
        if not _vector_loaded:
            _vector_sum = _load_vector_sum()
            _vector_loaded = True
        if _vector_sum is not None:
            return _vector_sum(data)
    value = _FROM_BYTES(data, "big")
    if len(data) & 1:
        value <<= 8
    if not value:
        return 0
    return value % 0xFFFF or 0xFFFF


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


def sum_parts(parts: tuple[Buffer, ...] | list[Buffer]) -> int:
    """Ones' complement sum (folded, not inverted) of the concatenation of ``parts``.

    Nothing is concatenated: a part that starts at an odd offset of the whole is summed on
    its own and its sum byte-swapped (RFC 1071 (2), byte order independence: the sum of
    byte-swapped words is the byte-swapped sum).
    """
    total = 0
    odd = False
    for part in parts:
        s = ones_sum(part)
        total += _swap16(s) if odd else s
        if len(part) & 1:
            odd = not odd
    return fold(total)


def checksum(*parts: Buffer) -> int:
    """Internet checksum (inverted ones' complement sum) over the concatenated ``parts``."""
    if len(parts) == 1:
        return ~ones_sum(parts[0]) & 0xFFFF
    return ~sum_parts(parts) & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Partial (un-inverted, folded) sum of the TCP/UDP pseudo header.

    RFC 793 (3.1) / RFC 768: source address, destination address, zero, protocol and the
    transport length. Works for 4-byte (IPv4) and 16-byte (IPv6) addresses alike, since
    each address is a whole number of 16-bit words.
    """
    return fold(_FROM_BYTES(src, "big") + _FROM_BYTES(dst, "big") + proto + length)


def transport_checksum(src: bytes, dst: bytes, proto: int, *parts: Buffer) -> int:
    """Inverted TCP/UDP checksum over pseudo header + ``parts`` (header then payload).

    The caller puts zero in the checksum field of the header part before calling. UDP
    must still map a result of 0 to 0xffff itself (RFC 768).
    """
    length = 0
    for part in parts:
        length += len(part)
    total = pseudo_header_sum(src, dst, proto, length) + sum_parts(parts)
    return ~fold(total) & 0xFFFF


def verify(*parts: Buffer) -> bool:
    """True if the ones' complement sum over ``parts`` (checksum field included) is 0xffff.

    RFC 1071 (1): a receiver sums everything including the transmitted checksum; a correct
    packet sums to all ones.
    """
    if len(parts) == 1:
        return ones_sum(parts[0]) == 0xFFFF
    return sum_parts(parts) == 0xFFFF


def verify_transport(src: bytes, dst: bytes, proto: int, segment: Buffer) -> bool:
    """True if a received TCP/UDP ``segment`` (header + payload) has a correct checksum."""
    total = pseudo_header_sum(src, dst, proto, len(segment)) + ones_sum(segment)
    return fold(total) == 0xFFFF
