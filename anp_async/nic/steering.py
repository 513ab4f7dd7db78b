"""Receive-side scaling for a multi-queue TAP: which queue the kernel hands a frame to.

Linux's TAP picks the queue of each frame it sends to userspace in ``tun_select_queue``:
with a steering program attached (``TUNSETSTEERINGEBPF``) the program's return value
modulo the number of queues; without one, "automq": a symmetric flow hash
(``__skb_get_hash_symmetric``, siphash with a per-boot secret key) looked up in a flow
table that remembers the queue userspace last *wrote* that flow on (entries age out
after 3 s), else the hash scaled to the queue count. The secret key makes automq's
choice unpredictable from userspace, so a connection the stack opens could not pick a
source port that lands on its own queue, and an idle flow (no write for 3 s) may move.

:data:`STEERING_PROGRAM` is a small socket-filter eBPF program that makes the choice a
known function instead, as a real NIC's RSS hash with a known key does:

- IPv4 TCP or UDP (first fragment or unfragmented): a multiplicative hash of ``source
  port XOR destination port`` (symmetric; the hash matters: Linux gives connect() even
  ports, so the plain XOR's low bit would be the same for every flow to one port);
- ICMP: the same hash of the echo identifier (the stack picks identifiers like ports);
- ARP: the last byte of the sender's IPv4 address;
- anything else (non-first fragments included): queue 0.

:func:`steer_queue` computes the same function in Python for a 4-tuple, so a worker can
choose ports whose replies come back to it. The NIC reads header bytes at fixed offsets
the way a NIC's RSS engine does; it knows no protocol beyond that.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

# <linux/if_tun.h>: _IOW('T', 224, int)
TUNSETSTEERINGEBPF = 0x800454E0
_BPF_PROG_LOAD = 5
_BPF_PROG_TYPE_SOCKET_FILTER = 1
_SYS_BPF = 321  # x86_64

_INSN = struct.Struct("<BBhi")


def _i(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return _INSN.pack(code, (src << 4) | dst, off, imm)


# eBPF opcodes used below
_MOV64_X = 0xBF
_MOV64_K = 0xB7
_LDABS_H = 0x28
_LDABS_B = 0x30
_LDIND_H = 0x48
_JEQ_K = 0x15
_JNE_K = 0x55
_AND_K = 0x54
_LSH_K = 0x64
_XOR64_X = 0xAF
_EXIT = 0x95
_JA = 0x05
_MUL_K = 0x24
_RSH_K = 0x74
#: 2^32 / golden ratio: multiplying by it spreads the bits of a 16-bit value (Knuth).
_GOLDEN = 2654435761


def _program() -> bytes:
    """The steering program (r6 holds the skb for the legacy LD_ABS/LD_IND loads).

    Jump offsets count instructions from the next one.
    """
    ins = [
        _i(_MOV64_X, 6, 1),  # 0  r6 = skb
        _i(_LDABS_H, imm=12),  # 1  r0 = ethertype
        _i(_JEQ_K, 0, off=21, imm=0x0806),  # 2  ARP -> 24
        _i(_JNE_K, 0, off=22, imm=0x0800),  # 3  not IPv4 -> 26
        _i(_LDABS_H, imm=20),  # 4  flags + fragment offset
        _i(_AND_K, 0, imm=0x1FFF),  # 5
        _i(_JNE_K, 0, off=19, imm=0),  # 6  a later fragment (no ports) -> 26
        _i(_LDABS_B, imm=14),  # 7  version + IHL
        _i(_AND_K, 0, imm=0x0F),  # 8
        _i(_LSH_K, 0, imm=2),  # 9  r0 = IP header length
        _i(_MOV64_X, 7, 0),  # 10 r7 = IP header length
        _i(_LDABS_B, imm=23),  # 11 r0 = protocol
        _i(_JEQ_K, 0, off=7, imm=1),  # 12 ICMP -> 20
        _i(_JEQ_K, 0, off=1, imm=6),  # 13 TCP -> 15
        _i(_JNE_K, 0, off=11, imm=17),  # 14 not UDP -> 26
        _i(_LDIND_H, src=7, imm=14),  # 15 r0 = source port
        _i(_MOV64_X, 8, 0),  # 16 r8 = source port
        _i(_LDIND_H, src=7, imm=16),  # 17 r0 = destination port
        _i(_XOR64_X, 0, 8),  # 18 r0 ^= r8
        _i(_JA, off=1),  # 19 -> 21 (mix)
        _i(_LDIND_H, src=7, imm=14 + 4),  # 20 ICMP: the echo identifier
        _i(_MUL_K, 0, imm=_GOLDEN - (1 << 32)),  # 21 mix: Knuth's multiplicative hash
        _i(_RSH_K, 0, imm=16),  # 22 (32-bit ALU: the product wraps)
        _i(_EXIT),  # 23
        _i(_LDABS_B, imm=14 + 14 + 3),  # 24 ARP: last byte of the sender IPv4 address
        _i(_EXIT),  # 25
        _i(_MOV64_K, 0, imm=0),  # 26 queue 0
        _i(_EXIT),  # 27
    ]
    return b"".join(ins)


STEERING_PROGRAM = _program()


def mix(value: int) -> int:
    """The steering program's hash of a 16-bit value (Knuth's multiplicative hash)."""
    return ((value * _GOLDEN) & 0xFFFFFFFF) >> 16


def steer_queue(sport: int, dport: int, queues: int) -> int:
    """The queue :data:`STEERING_PROGRAM` picks for a TCP/UDP frame with these ports
    (symmetric: the same for both directions of a flow)."""
    return mix(sport ^ dport) % queues


def steer_icmp(ident: int, queues: int) -> int:
    """The queue the steering program picks for an ICMP echo with identifier ``ident``."""
    return mix(ident) % queues


class _BpfAttrLoad(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("pad", ctypes.c_char * 64),
    ]


def load_program(code: bytes = STEERING_PROGRAM) -> int:
    """Load ``code`` as a socket-filter eBPF program; returns its descriptor."""
    libc = ctypes.CDLL(None, use_errno=True)
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")
    logbuf = ctypes.create_string_buffer(65536)
    attr = _BpfAttrLoad(
        prog_type=_BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt=len(code) // _INSN.size,
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(lic),
        log_level=1,
        log_size=len(logbuf),
        log_buf=ctypes.addressof(logbuf),
    )
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(_SYS_BPF, _BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        msg = logbuf.value.decode(errors="replace").strip().splitlines()[-3:]
        raise OSError(err, f"loading the TAP steering program failed: {os.strerror(err)} {msg}")
    return int(fd)


def attach(tap_fd: int, prog_fd: int) -> None:
    """Make the TAP behind ``tap_fd`` steer with the program ``prog_fd`` (all queues)."""
    try:
        fcntl.ioctl(tap_fd, TUNSETSTEERINGEBPF, struct.pack("i", prog_fd))
    except OSError as e:
        raise OSError(e.errno or errno.EINVAL, f"TUNSETSTEERINGEBPF: {e.strerror}") from None
