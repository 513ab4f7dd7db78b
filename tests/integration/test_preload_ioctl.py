"""ioctl on the stack's sockets, as a program calls it (FIONREAD/SIOCINQ).

On Linux, FIONREAD on a UDP socket is the payload size of the next datagram (0 when none
waits) and on a TCP socket the bytes waiting to be read. The program's end of a stack
socket is a Unix socket whose UDP datagrams carry the library's 24-byte address header,
and a SOCK_SEQPACKET socket answers FIONREAD with all its packets together: the library
has to answer for it.
"""

from __future__ import annotations

import pytest

from tests.preloadutil import describe, stack_server

pytestmark = [pytest.mark.root]

PROGRAM = """
import fcntl, select, socket, struct, termios, time

def inq(s):
    return struct.unpack("i", fcntl.ioctl(s, termios.FIONREAD, b"\\0" * 4))[0]

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", 5000))
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("0.0.0.0", 5001)); srv.listen(1)
print("listening", flush=True)
select.select([u], [], [], 20)
time.sleep(0.5)  # both datagrams are here
seen = [inq(u)]
seen.append(len(u.recv(2000)))
seen.append(inq(u))
seen.append(len(u.recv(2000)))
seen.append(inq(u))
c, _ = srv.accept()
select.select([c], [], [], 20)
time.sleep(0.5)  # the whole stream is here
seen.append(inq(c))
print("fionread", *seen, flush=True)
"""

SENDER = """
import socket, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"a" * 100, ("10.0.0.2", 5000))
u.sendto(b"b" * 300, ("10.0.0.2", 5000))
time.sleep(1)
t = socket.create_connection(("10.0.0.2", 5001), timeout=10)
t.sendall(b"c" * 777)
"""


def test_fionread_is_the_next_datagram_and_the_stream_bytes() -> None:
    with stack_server(["python3", "-c", PROGRAM], "listening") as (ns, proc):
        sent = ns.run(["python3", "-c", SENDER], timeout=30)
        assert sent.returncode == 0, describe(sent) + proc.text()
        proc.wait_for("fionread")
        out = proc.text()
    # next datagram 100 (not 100+300, not with the header), then 300, then none; TCP 777
    assert "fionread 100 100 300 300 0 777" in out, out
