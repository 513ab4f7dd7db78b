"""Unmodified socket programs on the stack: ``anp run -- PROGRAM``.

The course's mechanism: a small C library, ``libanp_preload.so`` (``libanp_preload.c``
beside this file), is loaded with ``LD_PRELOAD`` into the program and its children and
talks to the anp process over a Unix socket, where :mod:`.server` answers with the stack.

- Every stack socket is a real descriptor in the program: one end of a Unix socketpair
  whose other end the anp process pumps to and from the stack's connection
  (:mod:`.sockets`). read/write/send/recv, blocking, O_NONBLOCK, poll/select/epoll, dup and
  fork work natively on it; its lifetime is the descriptor's.
- Only calls that need the stack cross the control channel (:mod:`.protocol`): socket,
  bind, listen, accept, connect, names, options, and the reason a stream ended.
- Loopback and AF_UNIX stay with the kernel; other IPv4 destinations are the stack's, and
  one it cannot route to fails with ENETUNREACH -- never the host's interfaces.

:mod:`.run` is ``anp run``'s side (spawn, attach, isolate); :mod:`.build` compiles the
library; :mod:`.isolate` runs a program in an empty network namespace.
"""
