"""Scenarios: what the simulated applications do. Each is ``async def f(ctx)``.

A scenario drives the real stacks through their public asyncio API (streams), checks
what its applications see (every byte once, in order, intact; errors where a peer died;
nothing waiting forever) and reports violations with ``ctx.fail``. The simulator then
checks the stacks themselves (invariants.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..proto.ethernet import ETH_P_IP, build_ethernet_header, mac_to_bytes
from ..proto.ipv4 import build_ipv4_header, ip_to_bytes
from ..proto.tcp.segment import SYN, TcpOptions, TcpSegment, build_tcp_header
from .world import Host, World

#: Errors a connection may end with when its peer vanished or reset it.
PEER_GONE = (ConnectionError, TimeoutError, OSError, asyncio.IncompleteReadError)

#: How long (virtual seconds) any single application step may take before it counts as stuck.
STEP_LIMIT = 900.0

_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
_TCP_KEEPIDLE = getattr(socket, "TCP_KEEPIDLE", 4)
_TCP_KEEPINTVL = getattr(socket, "TCP_KEEPINTVL", 5)
_TCP_KEEPCNT = getattr(socket, "TCP_KEEPCNT", 6)


@dataclass
class Ctx:
    """What a scenario gets: the world, its two hosts and the run's random source."""

    world: World
    a: Host
    b: Host
    #: Data scale: 1.0 normally; the soak run uses more.
    scale: float = 1.0

    @property
    def rng(self) -> Any:
        return self.world.rng

    def fail(self, msg: str) -> None:
        self.world.fail(msg)

    def log(self, text: str) -> None:
        self.world.trace.log("app", text)

    def size(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, max(lo, int(hi * self.scale)))

    async def step(self, what: str, aw: Awaitable[Any], limit: float = STEP_LIMIT) -> Any:
        """Await ``aw``; a step that takes longer than ``limit`` virtual seconds is stuck."""
        try:
            async with asyncio.timeout(limit) as cm:
                return await aw
        except TimeoutError:
            if not cm.expired():
                raise  # the awaited thing itself timed out (ETIMEDOUT): not stuck
            self.fail(f"stuck: {what} did not finish within {limit:.0f} s")
            self.world.dump()
            raise Stuck(what) from None


class Stuck(Exception):
    """An application step did not finish (already recorded as a failure)."""


async def connect(
    ctx: Ctx, client: Host, server: Host, port: int, what: str = "connect", **kw: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``open_connection`` as a real client does it: a connect that times out (all SYNs
    lost, or ARP holding a MAC that a corrupted reply taught it) is tried again."""
    for attempt in range(3):
        assert client.stack is not None
        try:
            return await ctx.step(what, client.stack.open_connection(server.ip, port, **kw))
        except TimeoutError:
            ctx.log(f"{what}: timed out (attempt {attempt})")
    assert client.stack is not None
    return await ctx.step(what, client.stack.open_connection(server.ip, port, **kw))


def _check(ctx: Ctx, what: str, got: bytes, want: bytes) -> None:
    if got == want:
        ctx.world.app_bytes += len(want)
        return
    i = next(
        (k for k, (x, y) in enumerate(zip(got, want, strict=False)) if x != y),
        min(len(got), len(want)),
    )
    ctx.fail(f"{what}: got {len(got)} bytes, want {len(want)}; first difference at {i}")


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while chunk := await reader.read(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def _send(writer: asyncio.StreamWriter, data: bytes, eof: bool) -> None:
    if data:
        writer.write(data)
        await writer.drain()
    if eof:
        writer.write_eof()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except PEER_GONE:
        pass


async def exchange(
    ctx: Ctx, client: Host, server: Host, port: int, up: bytes, down: bytes, tag: str = ""
) -> None:
    """One connection: ``up`` to the server and ``down`` back at the same time, both
    checked byte for byte; both sides close."""
    done = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sender = asyncio.ensure_future(_send(writer, down, eof=True))
            got = await _read_all(reader)
            await sender
            _check(ctx, f"{tag}server received", got, up)
        except PEER_GONE as e:
            ctx.fail(f"{tag}server: {type(e).__name__}: {e}")
        finally:
            await _close(writer)
            if not done.done():
                done.set_result(None)

    assert server.stack is not None and client.stack is not None
    srv = await server.stack.start_server(
        handler, server.ip, port, backlog=ctx.rng.choice([4, 128])
    )
    try:
        reader, writer = await connect(ctx, client, server, port, f"{tag}connect")
        sender = asyncio.ensure_future(_send(writer, up, eof=True))
        got = await ctx.step(f"{tag}client read", _read_all(reader))
        await ctx.step(f"{tag}client send", sender)
        _check(ctx, f"{tag}client received", got, down)
        await ctx.step(f"{tag}client close", _close(writer))
        await ctx.step(f"{tag}server done", done)
    finally:
        srv.close()
    ctx.log(f"{tag}exchange {len(up)}/{len(down)} ok")


# ----------------------------------------------------------------------- scenarios


async def bulk(ctx: Ctx) -> None:
    """Bulk data one way or both ways over one connection."""
    way = ctx.rng.choice(["ab", "ba", "both"])
    n = ctx.size(1, 300_000)
    up = ctx.rng.randbytes(n) if way in ("ab", "both") else b""
    down = ctx.rng.randbytes(ctx.size(1, 300_000)) if way in ("ba", "both") else b""
    await exchange(ctx, ctx.a, ctx.b, 5001, up, down)


async def request_response(ctx: Ctx) -> None:
    """Many small requests on one connection, each answered before the next."""
    assert ctx.a.stack is not None and ctx.b.stack is not None

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while hdr := await reader.read(4):
                if len(hdr) < 4:
                    hdr += await reader.readexactly(4 - len(hdr))
                n = int.from_bytes(hdr, "big")
                body = await reader.readexactly(n)
                writer.write(len(body).to_bytes(4, "big") + body[::-1])
                await writer.drain()
        except PEER_GONE as e:
            ctx.fail(f"rr server: {type(e).__name__}: {e}")
        finally:
            await _close(writer)

    srv = await ctx.b.stack.start_server(handler, ctx.b.ip, 5002)
    reader, writer = await connect(ctx, ctx.a, ctx.b, 5002, "rr connect")
    for i in range(ctx.size(3, 40)):
        body = ctx.rng.randbytes(ctx.rng.choice([1, 10, 100, 1460, 3000, 9000]))
        writer.write(len(body).to_bytes(4, "big") + body)
        hdr = await ctx.step(f"rr response {i}", reader.readexactly(4))
        got = await ctx.step(f"rr response {i}", reader.readexactly(int.from_bytes(hdr, "big")))
        _check(ctx, f"rr response {i}", got, body[::-1])
    await ctx.step("rr close", _close(writer))
    srv.close()


async def many(ctx: Ctx) -> None:
    """Many connections at once, each with its own exchange."""
    n = ctx.size(5, 40)
    jobs = []
    for i in range(n):
        up = ctx.rng.randbytes(ctx.rng.randint(0, 20_000))
        down = ctx.rng.randbytes(ctx.rng.randint(0, 20_000))
        jobs.append(exchange(ctx, ctx.a, ctx.b, 6000 + i, up, down, tag=f"c{i} "))
    await asyncio.gather(*jobs)


async def simultaneous(ctx: Ctx) -> None:
    """Simultaneous open (both sides connect to each other's port) and simultaneous close."""
    a, b = ctx.a, ctx.b
    assert a.stack is not None and b.stack is not None
    pa, pb = 40001, 40002
    up, down = ctx.rng.randbytes(ctx.size(0, 50_000)), ctx.rng.randbytes(ctx.size(0, 50_000))
    ctx.log(f"simultaneous open: {len(up)} bytes a->b, {len(down)} b->a")

    async def side(
        me: Host, peer: Host, lport: int, rport: int, data: bytes, want: bytes
    ) -> asyncio.StreamWriter:
        assert me.stack is not None
        reader, writer = await connect(
            ctx, me, peer, rport, f"{me.name} simultaneous connect", local_addr=(me.ip, lport)
        )
        sender = asyncio.ensure_future(_send(writer, data, eof=False))
        got = await ctx.step(f"{me.name} read", reader.readexactly(len(want)))
        await ctx.step(f"{me.name} send", sender)
        _check(ctx, f"{me.name} received", got, want)
        return writer

    wa, wb = await asyncio.gather(side(a, b, pa, pb, up, down), side(b, a, pb, pa, down, up))
    # Both close at the same instant: FIN_WAIT_1 -> CLOSING -> TIME_WAIT on both sides.
    await asyncio.gather(_close(wa), _close(wb))


async def simultaneous_close(ctx: Ctx) -> None:
    """An ordinary connection that both applications close at the same instant."""
    a, b = ctx.a, ctx.b
    assert a.stack is not None and b.stack is not None
    accepted: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    srv = await b.stack.start_server(handler, b.ip, 5003)
    ra, wa = await connect(ctx, a, b, 5003)
    rb, wb = await ctx.step("accept", accepted)
    data = ctx.rng.randbytes(ctx.size(1, 30_000))
    wa.write(data)
    _check(ctx, "b received", await ctx.step("b read", rb.readexactly(len(data))), data)
    await asyncio.gather(_close(wa), _close(wb))
    srv.close()


async def half_close(ctx: Ctx) -> None:
    """The client sends and shuts down its side; the server answers after EOF, then closes."""
    a, b = ctx.a, ctx.b
    assert a.stack is not None and b.stack is not None
    up = ctx.rng.randbytes(ctx.size(0, 100_000))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            got = await _read_all(reader)
            _check(ctx, "server received", got, up)
            # Answer only after the client's FIN: the half-open direction must still work.
            writer.write(got[::-1] * 2)
            await writer.drain()
        except PEER_GONE as e:
            ctx.fail(f"half-close server: {type(e).__name__}: {e}")
        finally:
            await _close(writer)

    srv = await b.stack.start_server(handler, b.ip, 5004)
    reader, writer = await connect(ctx, a, b, 5004)
    await ctx.step("send+eof", _send(writer, up, eof=True))
    got = await ctx.step("read answer", _read_all(reader))
    _check(ctx, "answer after half-close", got, up[::-1] * 2)
    await ctx.step("close", _close(writer))
    srv.close()


async def abort(ctx: Ctx) -> None:
    """The client aborts mid-transfer; the server must see the connection end."""
    a, b = ctx.a, ctx.b
    assert a.stack is not None and b.stack is not None
    ended = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        how = "eof"
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), 30.0)
                except TimeoutError:
                    chunk = b"?"  # idle: poke the peer, a dead one answers RST
                    writer.write(chunk)
                    await writer.drain()
                    continue
                if not chunk:
                    break
                writer.write(chunk[:16])
                await writer.drain()
        except PEER_GONE as e:
            how = type(e).__name__
        finally:
            writer.close()
            ended.set_result(how)

    srv = await b.stack.start_server(handler, b.ip, 5005)
    reader, writer = await connect(ctx, a, b, 5005)
    writer.write(ctx.rng.randbytes(ctx.size(1, 200_000)))
    await asyncio.sleep(ctx.rng.choice([0.0, 0.001, 0.01, 0.1, 1.0]))
    writer.transport.abort()
    how = await ctx.step("server sees the abort", ended)
    ctx.log(f"server saw {how}")
    srv.close()


async def zero_window(ctx: Ctx) -> None:
    """A slow reader behind a small receive buffer: the window closes and reopens."""
    a, b = ctx.a, ctx.b
    assert a.stack is not None and b.stack is not None
    up = ctx.rng.randbytes(ctx.size(20_000, 150_000))
    chunk = ctx.rng.choice([512, 2048, 8192])
    done = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = bytearray()
        try:
            while len(got) < len(up):
                if ctx.rng.random() < 0.05:
                    await asyncio.sleep(ctx.rng.uniform(5, 60))  # a long stall: persist probes
                else:
                    await asyncio.sleep(ctx.rng.uniform(0.01, 1.0))
                data = await reader.read(chunk)
                if not data:
                    break
                got += data
            _check(ctx, "slow reader received", bytes(got), up)
        except PEER_GONE as e:
            ctx.fail(f"slow reader: {type(e).__name__}: {e}")
        finally:
            await _close(writer)
            done.set_result(None)

    srv = await b.stack.start_server(handler, b.ip, 5006, limit=chunk)
    reader, writer = await connect(ctx, a, b, 5006)
    await ctx.step("send to a slow reader", _send(writer, up, eof=True), limit=STEP_LIMIT * 4)
    await ctx.step("slow reader done", done, limit=STEP_LIMIT * 4)
    await ctx.step("close", _close(writer))
    srv.close()


async def _idle_conn(ctx: Ctx, port: int) -> tuple[Any, Any, asyncio.Future[Any]]:
    """A connection whose server reads until the end and reports how it ended."""
    a, b = ctx.a, ctx.b
    assert a.stack is not None and b.stack is not None
    ended: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        how = "eof"
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except PEER_GONE as e:
            how = type(e).__name__
        finally:
            writer.close()
            if not ended.done():
                ended.set_result(how)

    srv = await b.stack.start_server(handler, b.ip, port)
    reader, writer = await connect(ctx, a, b, port)
    return (reader, writer), srv, ended


async def keepalive(ctx: Ctx) -> None:
    """Keep-alive: an idle connection to a live peer stays up; to a dead peer it ends."""
    (reader, writer), srv, ended = await _idle_conn(ctx, 5007)
    sock = writer.get_extra_info("socket")
    idle, intvl, cnt = (
        ctx.rng.choice([5, 30, 120]),
        ctx.rng.choice([1, 5, 20]),
        ctx.rng.randint(1, 5),
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, _TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, _TCP_KEEPINTVL, intvl)
    sock.setsockopt(socket.IPPROTO_TCP, _TCP_KEEPCNT, cnt)
    await asyncio.sleep(idle * 3)  # idle through several keep-alive rounds
    msg = ctx.rng.randbytes(100)
    writer.write(msg)
    try:
        _check(ctx, "echo after idle", await ctx.step("echo", reader.readexactly(100)), msg)
    except TimeoutError:
        # Keep-alive gave up on a live peer: right only if the wire lost the probes.
        if not _lossy(ctx):
            raise
        ctx.log("keep-alive probes lost on a lossy wire: the connection timed out")
        await ctx.world.crash(ctx.b)  # its RST may be lost too: the server would wait on
        return
    # Now the peer dies silently; keep-alive must end the connection.
    assert ctx.b is not None
    await ctx.world.crash(ctx.b)
    bound = idle + intvl * (cnt + 1) + 120.0
    try:
        await ctx.step("keep-alive notices the dead peer", reader.read(), limit=bound)
        ctx.fail("keep-alive: read returned instead of failing")
    except TimeoutError:
        pass
    except Stuck:
        raise
    except PEER_GONE as e:
        ctx.log(f"keep-alive ended the connection: {type(e).__name__}")
    writer.close()
    srv.close()


def _lossy(ctx: Ctx) -> bool:
    """True when the wire may lose frames (loss, link flaps, a rate limiter's queue)."""
    return any(
        h.faults.loss or h.faults.flap_every or h.faults.rate_bps or h.faults.corrupt
        for h in (ctx.a, ctx.b)
    )


async def user_timeout(ctx: Ctx) -> None:
    """TCP_USER_TIMEOUT: data unacknowledged that long ends the connection."""
    (reader, writer), srv, ended = await _idle_conn(ctx, 5008)
    ut = ctx.rng.choice([1, 5, 30])
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, ut * 1000)
    await ctx.world.crash(ctx.b)
    writer.write(ctx.rng.randbytes(ctx.size(1, 50_000)))
    t0 = ctx.world.loop.time()
    try:
        await ctx.step("user timeout", reader.read(), limit=ut + 150.0)
        ctx.fail("user timeout: read returned instead of failing")
    except Stuck:
        raise
    except PEER_GONE as e:
        ctx.log(f"user timeout after {ctx.world.loop.time() - t0:.3f} s: {type(e).__name__}")
    writer.close()
    srv.close()


def _syn_frame(dst: Host, src_ip: str, sport: int, dport: int, seq: int) -> bytes:
    src_b, dst_b = ip_to_bytes(src_ip), ip_to_bytes(dst.ip)
    seg = TcpSegment(sport, dport, seq, 0, SYN, 64240, b"", TcpOptions(mss=1460))
    tcp = build_tcp_header(seg, src_b, dst_b)
    ip = build_ipv4_header(src_b, dst_b, 6, len(tcp), sport & 0xFFFF)
    eth = build_ethernet_header(mac_to_bytes(dst.mac), bytes.fromhex("02aa00000001"), ETH_P_IP)
    return eth + ip + tcp


async def syn_flood(ctx: Ctx) -> None:
    """Spoofed SYNs flood the server while legitimate clients connect and exchange data."""
    a, b = ctx.a, ctx.b
    rng = ctx.rng
    n_syn = ctx.size(50, 1500)
    rate = rng.choice([1000, 10_000, 100_000])  # SYNs per second
    loop = ctx.world.loop
    for i in range(n_syn):
        src = f"10.0.0.{rng.randint(100, 250)}"
        frame = _syn_frame(b, src, rng.randint(1024, 65535), 5009, rng.getrandbits(32))
        loop.call_later(i / rate, ctx.world.inject, a, frame)
    jobs = []
    for i in range(ctx.size(2, 12)):
        up, down = rng.randbytes(rng.randint(1, 5000)), rng.randbytes(rng.randint(1, 5000))
        jobs.append(_later(rng.uniform(0, n_syn / rate), exchange_on(ctx, 5009, up, down, i)))
    await asyncio.gather(*jobs)


async def _later(delay: float, aw: Coroutine[Any, Any, Any]) -> Any:
    try:
        await asyncio.sleep(delay)
    except asyncio.CancelledError:
        aw.close()  # never started: say so instead of a "never awaited" warning
        raise
    return await aw


async def exchange_on(ctx: Ctx, port: int, up: bytes, down: bytes, i: int) -> None:
    """A client exchange with a shared flood-target server (started on first use)."""
    b = ctx.b
    assert b.stack is not None
    srv = getattr(ctx, "_flood_srv", None)
    if srv is None:

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                # A request timeout, as real servers have: a connection the cookie race
                # half-opened (its client was reset) would otherwise wait for ever.
                async with asyncio.timeout(60.0):
                    n = int.from_bytes(await reader.readexactly(4), "big")
                    body = await reader.readexactly(n)
                writer.write(body[::-1])
                await writer.drain()
            except (*PEER_GONE, TimeoutError) as e:
                # The cookie race above: the client was reset and retries on a new port.
                ctx.log(f"flood server: {type(e).__name__}")
            finally:
                await _close(writer)

        srv = await b.stack.start_server(handler, b.ip, port, backlog=ctx.rng.choice([8, 64]))
        ctx._flood_srv = srv  # type: ignore[attr-defined]
    assert ctx.a.stack is not None
    for attempt in range(3):
        # With SYN cookies a data segment that overtakes the handshake's last ACK fails
        # the cookie check and is answered with RST (as on Linux): a client retries.
        try:
            reader, writer = await connect(ctx, ctx.a, b, port, f"c{i} connect")
            if attempt:
                await asyncio.sleep(1.0)  # let the handshake's ACK land before the data
            writer.write(len(up).to_bytes(4, "big") + up)
            got = await ctx.step(f"c{i} answer", _read_all(reader))
        except ConnectionResetError:
            ctx.log(f"c{i} reset (attempt {attempt})")
            continue
        _check(ctx, f"c{i} answer", got, up[::-1])
        await _close(writer)
        return
    ctx.fail(f"c{i}: reset in 3 attempts during the SYN flood")


async def _crash_restart(ctx: Ctx, host: Host, down: float, new_mac: bool) -> None:
    await ctx.world.crash(host)
    await asyncio.sleep(down)
    assert host.port is not None
    host.port.drain()  # frames that arrived while it was off are gone
    if new_mac:
        host.mac = f"02:00:00:00:{ctx.rng.randrange(256):02x}:{ctx.rng.randrange(256):02x}"
    ctx.world.start(host)


async def arp_change(ctx: Ctx) -> None:
    """The server's MAC changes (new hardware, same address): clients must find it again."""
    up, down = ctx.rng.randbytes(ctx.size(1, 20_000)), ctx.rng.randbytes(ctx.size(1, 20_000))
    await exchange(ctx, ctx.a, ctx.b, 5010, up, down, tag="before ")
    await _crash_restart(ctx, ctx.b, ctx.rng.choice([0.01, 1.0, 10.0]), new_mac=True)
    await _retry_exchange(ctx, 5011, "after ")


async def _retry_exchange(ctx: Ctx, port: int, tag: str) -> None:
    """An exchange whose connect a real client would retry (3 attempts)."""
    a, b = ctx.a, ctx.b
    assert a.stack is not None and b.stack is not None
    up, down = ctx.rng.randbytes(ctx.size(1, 20_000)), ctx.rng.randbytes(ctx.size(1, 20_000))
    served = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            _check(ctx, f"{tag}server received", await _read_all(reader), up)
            writer.write(down)
            await writer.drain()
        except PEER_GONE as e:
            ctx.fail(f"{tag}server: {type(e).__name__}: {e}")
        finally:
            await _close(writer)
            served.set_result(None)

    srv = await b.stack.start_server(handler, b.ip, port)
    try:
        for attempt in range(3):
            try:
                r, w = await ctx.step(f"{tag}connect", a.stack.open_connection(b.ip, port))
                break
            except PEER_GONE as e:
                ctx.log(f"{tag}connect attempt {attempt}: {type(e).__name__}")
        else:
            ctx.fail(f"{tag}could not connect in 3 attempts")
            return
        await ctx.step(f"{tag}send", _send(w, up, eof=True))
        _check(ctx, f"{tag}client received", await ctx.step(f"{tag}read", _read_all(r)), down)
        await ctx.step(f"{tag}close", _close(w))
        await ctx.step(f"{tag}served", served)
    finally:
        srv.close()


async def restart(ctx: Ctx) -> None:
    """The server crashes and comes back: the client's connection must end, not hang."""
    (reader, writer), srv, ended = await _idle_conn(ctx, 5012)
    # Without keep-alive a reader whose peer lost its state mid-echo waits forever, on
    # Linux too; with it the probe meets the restarted host, which answers RST.
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, _TCP_KEEPIDLE, 10)
    sock.setsockopt(socket.IPPROTO_TCP, _TCP_KEEPINTVL, 2)
    sock.setsockopt(socket.IPPROTO_TCP, _TCP_KEEPCNT, 3)
    ctx.world.loop.call_later(
        ctx.rng.uniform(0, 2.0),
        lambda: asyncio.ensure_future(
            _crash_restart(ctx, ctx.b, ctx.rng.choice([0.0, 0.5, 5.0]), new_mac=False)
        ),
    )
    t0 = ctx.world.loop.time()
    try:
        for i in range(10_000):
            msg = ctx.rng.randbytes(ctx.rng.randint(1, 3000))
            writer.write(msg)
            got = await ctx.step("echo across a restart", reader.readexactly(len(msg)))
            _check(ctx, f"echo {i}", got, msg)
            await asyncio.sleep(ctx.rng.uniform(0.001, 0.5))
        ctx.fail("restart: the connection outlived its peer's restart")
    except Stuck:
        raise
    except PEER_GONE as e:
        ctx.log(f"connection ended {ctx.world.loop.time() - t0:.3f} s in: {type(e).__name__}")
    writer.close()
    await asyncio.sleep(6.0)  # let the restart finish
    await ctx.step("server restarted", _wait_up(ctx.b))
    await _retry_exchange(ctx, 5013, "after restart ")
    srv.close()


async def _wait_up(host: Host) -> None:
    while host.stack is None:
        await asyncio.sleep(0.1)


Scenario = Callable[[Ctx], Awaitable[None]]

SCENARIOS: dict[str, Scenario] = {
    "bulk": bulk,
    "rr": request_response,
    "many": many,
    "simopen": simultaneous,
    "simclose": simultaneous_close,
    "halfclose": half_close,
    "abort": abort,
    "zerowindow": zero_window,
    "keepalive": keepalive,
    "usertimeout": user_timeout,
    "synflood": syn_flood,
    "arpchange": arp_change,
    "restart": restart,
}
