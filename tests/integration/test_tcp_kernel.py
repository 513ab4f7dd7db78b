"""The stack's TCP against the Linux kernel's TCP, over a TAP in a namespace the test makes.

Transfers in both directions are checked by sha256 in every receive mode; then 100
concurrent connections, half-close, refusal, a connect timeout, and a transfer through a
5% random drop each way (nftables ``numgen random`` on the kernel's input, the stack's
fault injector on what the kernel sends).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time

import pytest

from anp_async import Stack, StackConfig
from anp_async.nic.faults import FaultConfig, FaultyNic
from tests.netutil import KERNEL_IP, STACK_CIDR, STACK_IP, STACK_MAC
from tests.stackutil import ALL_MODES, MODE_PARAMS, fast_tcp, run_in_ns
from tests.tcpstate import bounded

PEER = os.path.join(os.path.dirname(__file__), "..", "kernel_peer.py")
MiB = 1024 * 1024


def stack_on(tap, mode: str = "interrupt", **tcp) -> Stack:  # type: ignore[no-untyped-def]
    return Stack(
        StackConfig(
            nic=tap,
            ip=STACK_CIDR,
            mac=STACK_MAC.hex(":"),
            mode=mode,
            mode_params=MODE_PARAMS[mode],
            tcp=fast_tcp(**tcp),
        )
    )


def seeded(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


class KernelPeer:
    """A kernel_peer.py process in the namespace; ``started()`` waits for its listener."""

    def __init__(self, ns, *args: str) -> None:  # type: ignore[no-untyped-def]
        self.ns = ns
        self.args = [str(a) for a in args]

    async def __aenter__(self) -> KernelPeer:
        self.proc = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            self.ns.name,
            "python3",
            PEER,
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def started(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 10)
        assert b"listening" in line, line

    async def result(self, timeout: float = 120) -> dict:
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode == 0, err.decode()
        return json.loads(out.decode().strip().splitlines()[-1])

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def stack_sends(stack: Stack, ns, port: int, n: int, seed: int) -> float:  # type: ignore[no-untyped-def]
    data = seeded(n, seed)
    async with KernelPeer(ns, "serve-sink", port) as peer:
        await peer.started()
        t0 = time.perf_counter()
        _r, w = await stack.open_connection(KERNEL_IP, port)
        w.write(data)
        await w.drain()
        w.close()
        await w.wait_closed()
        res = await peer.result()
        dt = time.perf_counter() - t0
    assert res == {"bytes": n, "sha256": hashlib.sha256(data).hexdigest()}
    return dt


async def stack_receives(stack: Stack, ns, port: int, n: int, seed: int) -> float:  # type: ignore[no-untyped-def]
    async with KernelPeer(ns, "serve-source", port, n, seed) as peer:
        await peer.started()
        t0 = time.perf_counter()
        r, w = await stack.open_connection(KERNEL_IP, port)
        h = hashlib.sha256()
        total = 0
        while chunk := await r.read(1 << 20):
            h.update(chunk)
            total += len(chunk)
        dt = time.perf_counter() - t0
        w.close()
        await peer.result()
    assert total == n and h.hexdigest() == hashlib.sha256(seeded(n, seed)).hexdigest()
    return dt


@pytest.mark.parametrize("mode", ALL_MODES)
async def test_transfers_each_direction(tap_pair, mode: str) -> None:
    ns, tap = tap_pair
    async with stack_on(tap, mode) as stack:
        for size in (1 * MiB, 50 * MiB):
            t_send = await stack_sends(stack, ns, 5001, size, seed=size)
            t_recv = await stack_receives(stack, ns, 5002, size, seed=size + 1)
            print(
                f"{mode}: {size // MiB} MiB stack->kernel {t_send:.2f}s "
                f"({size / t_send / 1e6:.1f} MB/s), kernel->stack {t_recv:.2f}s "
                f"({size / t_recv / 1e6:.1f} MB/s)"
            )
        assert stack.stats()["tcp"]["rx_segments"] > 0


async def test_kernel_client_to_stack_server(tap_pair) -> None:
    ns, tap = tap_pair
    n = 5 * MiB

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    async with stack_on(tap) as stack:
        server = await stack.start_server(echo, STACK_IP, 7000)
        rc, out, err = await run_in_ns(ns, ["python3", PEER, "send", STACK_IP, "7000", str(n), "3"])
        assert rc == 0, err
        res = json.loads(out)
        digest = hashlib.sha256(seeded(n, 3)).hexdigest()
        assert res == {"sent": n, "reply_bytes": n, "reply_sha256": digest}
        # nc (netcat-openbsd) as a second, unrelated kernel client
        rc, out, err = await run_in_ns(
            ns, ["sh", "-c", f"printf 'hello stack' | nc -N -w 5 {STACK_IP} 7000"]
        )
        assert out == "hello stack", (rc, out, err)
        server.close()
        await server.wait_closed()


async def test_hundred_concurrent_connections(tap_pair) -> None:
    ns, tap = tap_pair
    async with stack_on(tap) as stack:
        async with KernelPeer(ns, "serve-echo", 7100, 100) as peer:
            await peer.started()

            async def one(i: int) -> bool:
                r, w = await stack.open_connection(KERNEL_IP, 7100)
                msg = seeded(10_000 + i, i)
                w.write(msg)
                w.write_eof()
                got = await r.read(-1)
                w.close()
                await w.wait_closed()
                return got == msg

            results = await asyncio.gather(*(one(i) for i in range(100)))
            assert all(results)
            assert (await peer.result())["served"] == 100


async def test_half_close_both_ways(tap_pair) -> None:
    ns, tap = tap_pair

    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        question = await reader.read(-1)  # the client's FIN arrives first
        writer.write(b"answer to " + question)  # ... and we can still send afterwards
        await writer.drain()
        writer.close()

    async with stack_on(tap) as stack:
        await stack.start_server(answer_after_eof, STACK_IP, 7200)
        rc, out, err = await run_in_ns(ns, ["python3", PEER, "halfclose", STACK_IP, "7200"])
        assert rc == 0, err
        assert json.loads(out)["reply_sha256"] == hashlib.sha256(b"answer to question?").hexdigest()
        # The other way round: the stack half-closes, the kernel answers after its EOF.
        async with KernelPeer(ns, "serve-echo", 7201, 1) as peer:
            await peer.started()
            r, w = await stack.open_connection(KERNEL_IP, 7201)
            w.write(b"x" * 100_000)
            w.write_eof()
            assert await r.read(-1) == b"x" * 100_000
            w.close()
            await peer.result()


async def test_connection_refused(tap_pair) -> None:
    _ns, tap = tap_pair
    async with stack_on(tap) as stack:
        with pytest.raises(ConnectionRefusedError):
            await stack.open_connection(KERNEL_IP, 9)


async def test_connect_timeout_to_silent_port(tap_pair) -> None:
    ns, tap = tap_pair
    rc, _, err = await run_in_ns(
        ns,
        ["nft", "-f", "-"],
        stdin=(
            b"table inet anptest {\n chain input {\n type filter hook input priority 0;\n"
            b" tcp dport 9999 drop\n }\n}\n"
        ),
    )
    assert rc == 0, err
    async with stack_on(tap, syn_retries=3) as stack:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await stack.open_connection(KERNEL_IP, 9999)
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.2 + 0.4 + 0.8  # RFC 6298 backoff: the SYN was retried


async def test_unreachable_neighbour(tap_pair) -> None:
    _ns, tap = tap_pair
    async with stack_on(tap) as stack:
        stack.arp.retry_interval = 0.1  # type: ignore[attr-defined]
        with pytest.raises(OSError) as info:
            await stack.open_connection("10.0.0.99", 80)
        assert info.value.errno == 113  # EHOSTUNREACH


async def test_address_in_use(tap_pair) -> None:
    _ns, tap = tap_pair

    async def nothing(r, w):  # type: ignore[no-untyped-def]
        w.close()

    async with stack_on(tap) as stack:
        await stack.start_server(nothing, STACK_IP, 7300)
        with pytest.raises(OSError) as info:
            await stack.start_server(nothing, STACK_IP, 7300)
        assert info.value.errno == 98  # EADDRINUSE


async def test_lost_handshake_ack_to_a_server_that_speaks_first(tap_pair) -> None:
    """The stack's ACK of the SYN-ACK is lost and the stack has nothing to send: only the
    kernel's SYN-ACK retransmission (after 1 s) can complete the handshake, and the stack
    must answer that duplicate with an ACK, or both ends wait for each other forever."""
    ns, tap = tap_pair
    rules = (
        b"table inet anpack {\n chain in {\n type filter hook input priority 0;\n"
        b" tcp dport 5103 tcp flags == ack quota until 52 bytes counter drop\n }\n}\n"
    )  # the first pure ACK to port 5103: the handshake's (52 bytes with timestamps)
    rc, _, err = await run_in_ns(ns, ["nft", "-f", "-"], stdin=rules)
    assert rc == 0, err
    async with stack_on(tap) as stack:
        async with KernelPeer(ns, "serve-source", 5103, 1000, 7) as peer:
            await peer.started()
            r, w = await stack.open_connection(KERNEL_IP, 5103)
            got = await bounded(r.read(-1), 15, stack, "first data", ns)
            assert got == seeded(1000, 7)
            assert stack.stats()["tcp"]["conn_dup_segments"] >= 1  # the SYN-ACK again
            w.close()
            await peer.result()
    rc, out, _ = await run_in_ns(ns, ["nft", "list", "table", "inet", "anpack"])
    assert "packets 1 bytes 52" in out, out  # the handshake ACK was the one dropped


async def test_transfer_through_kernel_side_random_drop(tap_pair) -> None:
    ns, tap = tap_pair
    # 5% of the kernel's incoming TCP segments are dropped (nftables, input hook) and 5% of
    # the frames it sends are lost on the way to the stack (the stack's fault injector).
    # Not an nftables output rule: a drop there fails the kernel's transmission instead of
    # losing the frame, and Linux gives up a half-open connection whose SYN-ACK
    # retransmission fails (reqsk_timer_handler) without a RST. Once the stack's
    # handshake ACK was also lost, its client waited for data from a server that had
    # forgotten it -- with no timer on either side: the 1-in-a-few-hundred hang.
    rules = (
        b"table inet anpdrop {\n"
        b" chain in {\n type filter hook input priority 0;\n"
        b" meta l4proto tcp numgen random mod 100 < 5 drop\n }\n}\n"
    )
    rc, _, err = await run_in_ns(ns, ["nft", "-f", "-"], stdin=rules)
    assert rc == 0, err
    lossy = FaultyNic(tap, FaultConfig(loss=0.05, direction="rx", seed=13))
    async with stack_on(lossy) as stack:
        # A transfer takes a few seconds; one that stalls fails here with every
        # connection's state (and the kernel's) instead of waiting for pytest's timeout.
        await bounded(
            stack_sends(stack, ns, 5101, 4 * MiB, seed=11), 60, stack, "stack->kernel", ns
        )
        await bounded(
            stack_receives(stack, ns, 5102, 4 * MiB, seed=12), 60, stack, "kernel->stack", ns
        )
        st = stack.stats()["tcp"]
        assert st.get("conn_retransmits", 0) + st.get("conn_fast_retransmits", 0) > 0, st
        assert lossy.fault_stats["dropped"] > 0
    rc, out, _ = await run_in_ns(ns, ["nft", "list", "table", "inet", "anpdrop"])
    assert "drop" in out
