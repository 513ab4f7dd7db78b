"""Kernel-side TCP peers for the interop tests, run inside the test's namespace.

Plain blocking sockets on the Linux kernel's TCP (run with ``ip netns exec NS python3
tests/kernel_peer.py ...``). Each prints one line of JSON with what it saw, so the test can
compare hashes. Every wait is bounded by a socket timeout.

    serve-sink PORT            accept one connection, read to EOF, report bytes + sha256
    serve-source PORT N SEED   accept one connection, send N seeded bytes, close
    send HOST PORT N SEED      connect, send N seeded bytes, half-close, read to EOF
    recv HOST PORT             connect, read to EOF, report bytes + sha256
    serve-echo PORT COUNT      accept COUNT connections, echo each to EOF (threads)
    halfclose HOST PORT        connect, send, shut down writing, read the reply to EOF
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import sys
import threading

TIMEOUT = 60.0


def seeded(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def drain(conn: socket.socket) -> tuple[int, str]:
    h = hashlib.sha256()
    total = 0
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            return total, h.hexdigest()
        total += len(chunk)
        h.update(chunk)


def listener(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    s.settimeout(TIMEOUT)
    print(json.dumps({"listening": port}), flush=True)
    return s


def main(argv: list[str]) -> None:
    cmd = argv[0]
    if cmd == "serve-sink":
        conn, _ = listener(int(argv[1])).accept()
        conn.settimeout(TIMEOUT)
        n, digest = drain(conn)
        print(json.dumps({"bytes": n, "sha256": digest}), flush=True)
    elif cmd == "serve-source":
        conn, _ = listener(int(argv[1])).accept()
        conn.settimeout(TIMEOUT)
        conn.sendall(seeded(int(argv[2]), int(argv[3])))
        conn.close()
        print(json.dumps({"sent": int(argv[2])}), flush=True)
    elif cmd == "send":
        c = socket.create_connection((argv[1], int(argv[2])), timeout=TIMEOUT)
        data = seeded(int(argv[3]), int(argv[4]))

        def send_all() -> None:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)

        # Send and read at once: an echo peer stops reading when we stop reading.
        sender = threading.Thread(target=send_all)
        sender.start()
        n, digest = drain(c)
        sender.join(TIMEOUT)
        print(
            json.dumps({"sent": int(argv[3]), "reply_bytes": n, "reply_sha256": digest}), flush=True
        )
    elif cmd == "recv":
        c = socket.create_connection((argv[1], int(argv[2])), timeout=TIMEOUT)
        n, digest = drain(c)
        print(json.dumps({"bytes": n, "sha256": digest}), flush=True)
    elif cmd == "serve-echo":
        srv = listener(int(argv[1]))
        count = int(argv[2])

        def echo(conn: socket.socket) -> None:
            conn.settimeout(TIMEOUT)
            with conn:
                while chunk := conn.recv(65536):
                    conn.sendall(chunk)

        threads = []
        for _ in range(count):
            conn, _ = srv.accept()
            t = threading.Thread(target=echo, args=(conn,))
            t.start()
            threads.append(t)
        for t in threads:
            t.join(TIMEOUT)
        print(json.dumps({"served": count}), flush=True)
    elif cmd == "halfclose":
        c = socket.create_connection((argv[1], int(argv[2])), timeout=TIMEOUT)
        c.sendall(b"question?")
        c.shutdown(socket.SHUT_WR)
        n, digest = drain(c)
        print(json.dumps({"reply_bytes": n, "reply_sha256": digest}), flush=True)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
