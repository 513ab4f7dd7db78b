"""Initial sequence numbers per RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secretkey)."""

from __future__ import annotations

import hashlib
import struct

__all__ = ["IsnGenerator"]

_PORTS = struct.Struct("!HH")


class IsnGenerator:
    """Keyed, per-4-tuple ISN generator (one per stack, with a random secret)."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("secret must not be empty")
        # blake2s keys are at most 32 bytes; hash longer secrets down.
        self._secret = secret if len(secret) <= 32 else hashlib.blake2s(secret).digest()

    def isn(self, local_ip: bytes, lport: int, remote_ip: bytes, rport: int, now: float) -> int:
        """The ISN for a new connection of this 4-tuple at time ``now`` (seconds)."""
        # RFC 6528 (3): F is a keyed hash of the 4-tuple, so sequence spaces of different
        # connections are unrelated and not guessable from outside.
        h = hashlib.blake2s(key=self._secret, digest_size=4)
        h.update(bytes(local_ip))
        h.update(bytes(remote_ip))
        h.update(_PORTS.pack(lport & 0xFFFF, rport & 0xFFFF))
        f = int.from_bytes(h.digest(), "big")
        # RFC 6528 (3) / RFC 9293 (3.4.1): M is a timer ticking every 4 microseconds.
        m = int(now * 250_000)
        return (m + f) & 0xFFFFFFFF
