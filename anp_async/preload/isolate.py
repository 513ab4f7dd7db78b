"""``python -m anp_async.preload.isolate -- PROGRAM ARGS``: run PROGRAM in an empty network
namespace of its own (only ``lo``, up), with the preload library loaded.

``anp run --isolate`` uses it so that a socket the library does not take can only reach an
empty namespace -- it fails instead of going out through the host's interfaces. The library
path comes in ``ANP_PRELOAD_LIB`` and is put into ``LD_PRELOAD`` only for the program, so
this helper's own sockets (the one that brings ``lo`` up) stay the kernel's.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def enter_empty_netns() -> None:
    """unshare(CLONE_NEWNET), then bring the new namespace's loopback up."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: python -m anp_async.preload.isolate -- PROGRAM [ARGS]", file=sys.stderr)
        return 2
    try:
        enter_empty_netns()
    except OSError as e:
        print(f"anp run: cannot isolate the program: {e.strerror or e}", file=sys.stderr)
        return 126
    lib = os.environ.pop("ANP_PRELOAD_LIB", "")
    if lib:
        old = os.environ.get("LD_PRELOAD", "")
        os.environ["LD_PRELOAD"] = f"{lib}:{old}" if old else lib
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        print(f"anp run: {argv[0]}: {e.strerror}", file=sys.stderr)
        return 127 if isinstance(e, FileNotFoundError) else 126
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
